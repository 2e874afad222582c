"""How a worker takes each way a turn can end: cancelled from within, finished just as a
renewal looks, or lost with an exception of its own. None may kill the worker silently,
nor be reported as what it is not."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.agent.models import Model
from aichats.config import Settings
from aichats.runs import worker as worker_module
from aichats.runs.turn import Models
from aichats.services import runs
from aichats.services.runs import Claim
from aichats.storage.database import Database
from aichats.storage.schema import runs as runs_table
from tests.runs.test_worker import drain, make_worker, messages_of, new_chat

pytestmark = pytest.mark.anyio

_RUN = sa.select(runs_table.c.status, runs_table.c.attempts)


async def run_row(db: Database) -> dict[str, Any]:
    row = await db.fetch_one(_RUN)
    assert row is not None
    return dict(row)


def taken_over(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "taken over" in r.getMessage()]


async def test_a_turn_cancelled_from_within_is_logged_and_the_worker_goes_on(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The turn meets a ``CancelledError`` nobody asked for (here its model's load, as when
    ``Models.close`` cancels a load it awaits). The worker logs it and goes on; the run
    keeps its lease until it lapses, then is claimed again and answered."""
    chat = await new_chat(db, "are you there")
    worker = make_worker(db, run_lease_seconds=1)

    async def cancelled_load(spec: str) -> Model:
        raise asyncio.CancelledError

    monkeypatch.setattr(worker.models, "get", cancelled_load)
    now = clock.now_ms()
    clock.set_clock(lambda: now)
    with caplog.at_level(logging.ERROR, logger="aichats.runs"):
        assert await worker.run_one() is True  # not a CancelledError out of the worker
    assert any("was cancelled, not by its worker" in r.getMessage() for r in caplog.records)
    assert await run_row(db) == {"status": "running", "attempts": 1}

    monkeypatch.undo()
    assert await worker.run_one() is False  # its lease still holds
    clock.set_clock(lambda: now + 2_000)
    assert await drain(worker) == 1
    assert await run_row(db) == {"status": "completed", "attempts": 2}
    _, reply = await messages_of(db, chat)
    assert reply["status"] == "completed" and reply["content"] == "You said: are you there"


async def test_a_worker_survives_a_turn_cancelled_from_within(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``run_forever`` (what the supervisor runs): the worker is still there, and
    answers the next chat."""
    await new_chat(db, "first")
    settings = Settings(model="test:echo", model_timeout_seconds=5)
    worker = worker_module.Worker(db, settings, Models(settings), asyncio.Event(), "w1")
    real_get = worker.models.get
    calls = 0

    async def cancelled_once(spec: str) -> Model:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError
        return await real_get(spec)

    monkeypatch.setattr(worker.models, "get", cancelled_once)
    forever = asyncio.create_task(worker.run_forever())
    try:
        # The next chat only once the first turn met its cancellation: with both queued, the
        # worker would claim both at once, and either could be the one cancelled.
        async with asyncio.timeout(5):
            while calls == 0:
                await asyncio.sleep(0.01)
        second = await new_chat(db, "second")
        async with asyncio.timeout(5):
            while (replies := (await messages_of(db, second))[1:]) == [] or replies[0]["status"] != "completed":
                assert not forever.done(), "the worker died"
                worker.wake.set()
                await asyncio.sleep(0.02)
    finally:
        forever.cancel()
        await asyncio.wait([forever])
    assert forever.cancelled()  # it ended for its own cancellation, not before


async def test_a_renewal_that_meets_the_turns_own_finish_is_not_a_takeover(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The turn commits its run's ``finish``; a renewal then finds the run no longer
    running, while the turn still has a moment's work after its commit. The turn is left
    to end (not cancelled), and nothing says the run was taken over."""
    await new_chat(db, "quick one")
    finished = asyncio.Event()
    ended: list[str] = []

    async def finishing_turn(db: Database, settings: Settings, models: Models, operator: object, run: Claim) -> None:
        async with db.transaction() as tx:
            assert await runs.finish(tx, run, status="completed")
        finished.set()
        await asyncio.sleep(0.02)  # after the commit: a pooled connection's release, a listener
        ended.append(run.id)

    renew_all = runs.renew_all

    async def renew_after_the_finish(db: Database, held: Sequence[Claim], lease_ms: int) -> set[tuple[int, int]]:
        await finished.wait()
        return await renew_all(db, held, lease_ms)

    monkeypatch.setattr(worker_module, "run_turn", finishing_turn)
    monkeypatch.setattr(runs, "renew_all", renew_after_the_finish)
    worker = make_worker(db, run_lease_seconds=0.03)  # a renewal 10 ms in, while the turn is finishing
    with caplog.at_level(logging.WARNING, logger="aichats.runs"):
        assert await worker.run_one() is True
    assert len(ended) == 1, "the turn was cancelled after its commit"
    assert not taken_over(caplog)
    assert await run_row(db) == {"status": "completed", "attempts": 1}


async def test_a_lost_turns_own_exception_is_retrieved_and_logged(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A turn whose lease was lost raises something else while being cancelled: the
    worker says the run was taken over, with that exception, and asyncio never reports
    an exception that was never retrieved."""
    await new_chat(db, "lost one")

    async def stubborn_turn(db: Database, settings: Settings, models: Models, operator: object, run: Claim) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def lost(db: Database, held: Sequence[Claim], lease_ms: int) -> set[tuple[int, int]]:
        return set()

    monkeypatch.setattr(worker_module, "run_turn", stubborn_turn)
    monkeypatch.setattr(runs, "renew_all", lost)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        with caplog.at_level(logging.WARNING, logger="aichats.runs"):
            assert await make_worker(db, run_lease_seconds=0.03).run_one() is True
        gc.collect()  # a task whose exception was never retrieved says so when collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not [c for c in reported if "never retrieved" in c["message"]], reported
    (warning,) = taken_over(caplog)
    assert warning.exc_info is not None and isinstance(warning.exc_info[1], RuntimeError)
