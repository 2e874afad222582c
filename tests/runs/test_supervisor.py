"""The supervisor of a process's background services: restarts, never silently dead, stops all."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aichats.runs.supervisor import Service, Supervisor

pytestmark = pytest.mark.anyio


async def test_a_crashing_service_is_logged_and_started_again(caplog: pytest.LogCaptureFixture) -> None:
    starts = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal starts
        starts += 1
        if starts < 3:
            raise RuntimeError(f"crash {starts}")
        steady.set()
        await asyncio.Event().wait()

    async def returns() -> None:
        return None

    supervisor = Supervisor([Service("flaky", flaky), Service("quitter", returns)], restart_seconds=0.01)
    with caplog.at_level(logging.ERROR, logger="aichats.supervisor"):
        supervisor.start()
        await asyncio.wait_for(steady.wait(), 2)
        await supervisor.stop()
    assert starts == 3
    crashes = [r for r in caplog.records if "flaky crashed" in r.getMessage()]
    assert len(crashes) == 2 and all(r.exc_info for r in crashes)
    assert any("quitter stopped by itself" in r.getMessage() for r in caplog.records)


async def test_stopping_cancels_every_service_and_waits_for_each() -> None:
    running: set[str] = set()
    ended: list[str] = []
    both = asyncio.Event()

    def service(name: str) -> Service:
        async def run() -> None:
            running.add(name)
            if len(running) == 2:
                both.set()
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0.05)  # cleanup that takes a while: stop waits for it
                ended.append(name)

        return Service(name, run)

    supervisor = Supervisor([service("a"), service("b")])
    supervisor.start()
    await asyncio.wait_for(both.wait(), 2)
    await supervisor.stop()
    assert sorted(ended) == ["a", "b"]
    await supervisor.stop()  # a second stop is harmless


async def test_a_service_cancelled_from_within_is_logged_and_started_again(caplog: pytest.LogCaptureFixture) -> None:
    """A ``CancelledError`` nobody asked for (a library's, a cancelled task it awaited) is
    a crash: a task group would take it for a normal end, and the service would be dead."""
    starts = 0
    steady = asyncio.Event()

    async def cancelled_from_within() -> None:
        nonlocal starts
        starts += 1
        if starts < 3:
            raise asyncio.CancelledError
        steady.set()
        await asyncio.Event().wait()

    supervisor = Supervisor([Service("fragile", cancelled_from_within)], restart_seconds=0.01)
    with caplog.at_level(logging.ERROR, logger="aichats.supervisor"):
        supervisor.start()
        await asyncio.wait_for(steady.wait(), 2)
        await supervisor.stop()  # the supervisor's own cancellation still ends it
    assert starts == 3
    assert len([r for r in caplog.records if "fragile was cancelled from within" in r.getMessage()]) == 2


async def test_stop_lets_the_callers_cancellation_through() -> None:
    """A caller cancelled while it waits for the services to end (the lifespan's or the
    CLI's cancellation) is cancelled, not returned to as if the stop had finished; the
    services still end."""
    started = asyncio.Event()
    ended = asyncio.Event()

    async def slow_to_stop() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.2)
            ended.set()

    supervisor = Supervisor([Service("slow", slow_to_stop)])
    supervisor.start()
    await asyncio.wait_for(started.wait(), 2)
    stopping = asyncio.create_task(supervisor.stop())
    await asyncio.sleep(0.05)  # the services are stopping
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert stopping.cancelled()
    await asyncio.wait_for(ended.wait(), 2)  # the caller's cancellation did not cut the services' cleanup short
    await supervisor.stop()


class Fatal(BaseException):
    """Not an ``Exception``: the supervisor does not restart a service for it."""


async def test_stop_raises_a_failure_of_the_supervisor() -> None:
    async def fatal() -> None:
        raise Fatal

    supervisor = Supervisor([Service("fatal", fatal)])
    supervisor.start()
    await asyncio.sleep(0.01)
    with pytest.raises(BaseExceptionGroup) as raised:
        await supervisor.stop()
    assert raised.group_contains(Fatal)
