"""The scheduling loop's passes and the process's workers: a pass that fires goes first,
its workers claim nothing until it is over (or has held them ``hold_seconds``)."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.config import Settings
from aichats.runs.turn import Models
from aichats.runs.worker import Worker
from aichats.scheduling import loop, scheduler
from aichats.scheduling.loop import Passes
from aichats.storage import database
from aichats.storage.database import Database
from aichats.storage.schema import runs as runs_table
from tests.runs.test_worker import messages_of, new_chat
from tests.scheduling.test_batches import scheduled_chats

pytestmark = pytest.mark.anyio
SETTINGS = Settings(model="test:echo")


async def test_a_pass_that_fires_nothing_holds_nothing() -> None:
    passes = Passes(hold_seconds=60)
    async with asyncio.timeout(1):
        await passes.over()
        async with passes.running():
            assert passes.idle
            await passes.over()
        await passes.over()
    assert passes.idle


async def test_a_firing_pass_holds_the_workers_until_it_is_over() -> None:
    passes = Passes(hold_seconds=60)
    async with passes.running():
        passes.firing()
        waiting = asyncio.create_task(passes.over())
        await asyncio.sleep(0.1)
        assert not waiting.done() and not passes.idle
        passes.firing()  # its next batch finds schedules due too: still one hold
    async with asyncio.timeout(1):
        await waiting
    assert passes.idle


async def test_a_pass_longer_than_the_hold_holds_the_workers_no_longer() -> None:
    passes = Passes(hold_seconds=0.2)
    async with passes.running():
        passes.firing()
        start = time.monotonic()
        async with asyncio.timeout(5):
            await passes.over()
        assert time.monotonic() - start >= 0.19 and not passes.idle
        async with asyncio.timeout(1):
            await passes.over()  # the pass is still firing, but it has held them long enough


async def test_a_failing_pass_is_over_too() -> None:
    passes = Passes(hold_seconds=60)
    with pytest.raises(RuntimeError):
        async with passes.running():
            passes.firing()
            raise RuntimeError("the database went away")
    assert passes.idle


async def test_a_cancelled_pass_is_over_too() -> None:
    passes = Passes(hold_seconds=60)

    async def firing_pass() -> None:
        async with passes.running():
            passes.firing()
            await asyncio.sleep(60)

    task = asyncio.create_task(firing_pass())
    await asyncio.sleep(0.05)
    assert not passes.idle
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert passes.idle


async def one_pass_watched(db: Database, passes: Passes) -> tuple[scheduler.Tick, bool]:
    """Run ``loop.one_pass``, looking at ``passes`` at every turn of the event loop meanwhile:
    its outcome, and whether the workers were ever held."""
    firing = asyncio.create_task(loop.one_pass(db, SETTINGS, passes))
    held = False
    while not firing.done():
        held |= not passes.idle
        await asyncio.sleep(0)
    return await firing, held


async def test_the_loops_pass_holds_its_workers_while_it_fires(db: Database) -> None:
    """``one_pass`` runs a real pass: while it writes due schedules, the process's workers
    are held; once it is over, they go on. A pass that finds nothing due holds nothing, and
    a pass that fails is over as well."""
    made = await scheduled_chats(db, 30)
    passes = Passes(hold_seconds=60)
    tick, held = await one_pass_watched(db, passes)
    assert (tick.fired, held) == (0, False)  # nothing due yet
    later = clock.now_ms() + 3_600_000
    clock.set_clock(lambda: later)  # every schedule is due
    tick, held = await one_pass_watched(db, passes)
    assert (tick.fired, held) == (len(made), True) and passes.idle
    closed = await database.connect(db.url, pool_size=1)
    await closed.close()
    # Whatever a closed database raises.
    with pytest.raises(Exception):  # noqa: B017
        await loop.one_pass(closed, SETTINGS, passes)
    assert passes.idle


async def test_a_worker_claims_nothing_while_its_process_fires(db: Database) -> None:
    """A queued run waits while the pass fires, then is answered."""
    passes = Passes(hold_seconds=60)
    worker = Worker(db, SETTINGS, Models(SETTINGS), asyncio.Event(), "w1", passes=passes)
    chat = await new_chat(db, "after the pass")
    working: asyncio.Task[None] | None = None
    try:
        async with passes.running():
            passes.firing()
            working = asyncio.create_task(worker.run_forever())
            await asyncio.sleep(0.5)
            statuses = await db.fetch_all(sa.select(runs_table.c.status))
            assert [row["status"] for row in statuses] == ["queued"]  # not claimed
        async with asyncio.timeout(10):
            while (reply := (await messages_of(db, chat))[1])["status"] != "completed":
                await asyncio.sleep(0.02)
        assert reply["content"] == "You said: after the pass"
    finally:
        if working is not None:
            working.cancel()
            await asyncio.gather(working, return_exceptions=True)
