"""The turns' share of the connections: past it, turns wait; the API's calls never do."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from aichats.runs.share import Share, turn_slots
from aichats.storage.database import Database
from aichats.storage.schema import users

pytestmark = pytest.mark.anyio

_ONE = sa.select(sa.literal(1).label("one"))
_INSERT_USER = sa.insert(users).values(id=sa.bindparam("id"), created_at=0)


async def test_turns_past_their_share_wait_and_the_api_does_not(db: Database) -> None:
    """One slot: while a turn's transaction holds it, another turn's read waits, and a read
    of the API (the database itself) is answered at once; the waiting read goes once the
    transaction ends."""
    share = Share(db, 1)
    entered, release = asyncio.Event(), asyncio.Event()

    async def turn_transaction() -> None:
        async with share.transaction() as tx:
            await tx.fetch_one(_ONE)
            entered.set()
            await release.wait()

    holder = asyncio.create_task(turn_transaction())
    await entered.wait()
    waiting = asyncio.create_task(share.fetch_one(_ONE))
    grouped = asyncio.create_task(share.run_grouped(_INSERT_USER, {"id": "user_shared"}))
    grouped_read = asyncio.create_task(share.fetch_one_grouped(_ONE, {}))
    written = asyncio.create_task(share.write_one(_INSERT_USER, {"id": "user_shared_alone"}))
    assert await asyncio.wait_for(db.fetch_one(_ONE), 5) is not None  # the API's read
    await asyncio.sleep(0.1)
    assert not waiting.done(), "a turn's read went past the share"
    assert not grouped.done(), "a turn's grouped write went past the share"
    assert not grouped_read.done(), "a turn's grouped read went past the share"
    assert not written.done(), "a turn's write went past the share"
    release.set()
    row = await asyncio.wait_for(waiting, 5)
    assert row is not None and row["one"] == 1
    await asyncio.wait_for(grouped, 5)
    grouped_row = await asyncio.wait_for(grouped_read, 5)
    assert grouped_row is not None and grouped_row["one"] == 1
    await asyncio.wait_for(written, 5)
    assert await db.fetch_one(sa.select(users.c.pk).where(users.c.id == "user_shared_alone")) is not None
    assert await db.fetch_one(sa.select(users.c.pk).where(users.c.id == "user_shared")) is not None
    await holder


def test_the_turns_get_half_the_pool() -> None:
    assert [turn_slots(size) for size in (1, 2, 3, 10, 11)] == [1, 1, 1, 5, 5]
