"""One supervisor for a process's background services (:mod:`aichats.runs.background`).

Each service is a coroutine that runs until cancelled, in one ``asyncio.TaskGroup``. One
that crashes (or returns) is logged and started again after ``RESTART_SECONDS``, never
left silently dead; stopping cancels them all and waits for each to end.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aichats-supervisor")

    async def stop(self) -> None:
        """Cancel every service and wait until each has ended."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for service in self.services:
                group.create_task(self._keep(service), name=f"aichats-{service.name}")

    async def _keep(self, service: Service) -> None:
        """Run ``service``, again and again: a crash is logged, never the end of it."""
        while True:
            try:
                await service.run()
                log.error("%s stopped by itself; starting it again", service.name)
            except Exception:
                log.exception("%s crashed; starting it again in %g s", service.name, self.restart_seconds)
            await asyncio.sleep(self.restart_seconds)
