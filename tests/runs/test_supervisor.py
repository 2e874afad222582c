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
