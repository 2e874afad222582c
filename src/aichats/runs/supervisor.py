"""One supervisor for a process's background services (:mod:`aichats.runs.background`).

Each service is a coroutine that runs until cancelled, in one ``asyncio.TaskGroup``. One
that crashes (or returns) is logged and started again after ``RESTART_SECONDS``, never
left silently dead; stopping cancels them all and waits for each to end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("aichats.supervisor")

RESTART_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Service:
    """A named coroutine function that runs until it is cancelled."""

    name: str
    run: Callable[[], Awaitable[None]]


class Supervisor:
    """Runs services in one task group until :meth:`stop`."""

    def __init__(self, services: list[Service], *, restart_seconds: float = RESTART_SECONDS) -> None:
        self.services = services
        self.restart_seconds = restart_seconds
        self._task: asyncio.Task[None] | None = None
        self._restarting: set[str] = set()  # crashed, waiting to be started again

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aichats-supervisor")

    def not_running(self) -> list[str]:
        """The services not running now (what ``/readyz`` reports): those waiting to be
        started again after a crash; all of them when the supervisor is not running."""
        if self._task is None or self._task.done():
            return [service.name for service in self.services]
        return sorted(self._restarting)

    async def stop(self) -> None:
        """Cancel every service and wait until each has ended.

        ``asyncio.wait``, not ``await`` on the task: a cancellation of the caller (the
        lifespan's, the CLI's) reaches the caller instead of being taken for the
        supervisor's own, and a failure of the supervisor (other than the cancellation
        asked for here) is raised.
        """
        task = self._task
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        self._task = None
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for service in self.services:
                group.create_task(self._keep(service), name=f"aichats-{service.name}")

    async def _keep(self, service: Service) -> None:
        """Run ``service``, again and again: a crash is logged, never the end of it.

        A service that ends cancelled when nobody cancelled it (a library raised
        ``CancelledError``, a task it awaited was cancelled) is a crash too: a task group
        takes a cancelled child for one that ended, so letting it through would leave the
        service silently dead. Only the supervisor's own cancellation ends the loop.
        """
        while True:
            try:
                await service.run()
                log.error("%s stopped by itself; starting it again", service.name)
            except asyncio.CancelledError:
                if _cancelling():
                    raise
                log.exception(
                    "%s was cancelled from within; starting it again in %g s", service.name, self.restart_seconds
                )
            except Exception:
                log.exception("%s crashed; starting it again in %g s", service.name, self.restart_seconds)
            self._restarting.add(service.name)
            try:
                await asyncio.sleep(self.restart_seconds)
            finally:
                self._restarting.discard(service.name)


def _cancelling() -> bool:
    """Whether the current task has been asked to stop (``Task.cancel``), as opposed to
    having met a ``CancelledError`` raised by something it awaited."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
