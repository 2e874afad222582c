"""The shared count behind the rate limit: blocks reserved from one row per key and operation."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from aichats.api.rate_limit import RateLimiter
from aichats.errors import RateLimited
from aichats.services import rate_limits
from aichats.storage import database
from aichats.storage.database import Database

pytestmark = pytest.mark.anyio


async def draw(db: Database, minute: int, *, key_id: str = "key_1", limit: int = 100) -> rate_limits.Grant:
    return await rate_limits.reserve(db, key_id=key_id, operation="op", minute=minute, limit=limit)


async def test_blocks_shrink_as_the_minute_runs_out_and_never_overdraw(db: Database) -> None:
    """A sixteenth of what is left (at most ``MAX_BLOCK``, at least 1), never more than what is
    left, 0 once it is used up; a new minute starts again from 0, and a process whose clock
    lags draws on the newer minute."""
    grants = []
    while (grant := await draw(db, 7)).granted:
        grants.append(grant.granted)
    assert sum(grants) == 100 and grant.used == 100
    assert grants[:3] == [6, 5, 5] and grants[-5:] == [1, 1, 1, 1, 1]
    assert all(a >= b for a, b in itertools.pairwise(grants))
    assert (await draw(db, 6)).granted == 0  # a lagging clock: the newer minute, used up
    assert await draw(db, 8) == rate_limits.Grant(granted=6, used=6)
    assert (await draw(db, 8, key_id="key_2", limit=10**9)).granted == rate_limits.MAX_BLOCK


async def test_concurrent_reservations_of_many_connections_grant_the_limit_exactly(
    db: Database, database_url: str
) -> None:
    """Reservations from several connections at once (as from several processes) queue on the
    row: together they grant exactly the limit."""
    others = [await database.connect(database_url, pool_size=2) for _ in range(3)]
    try:

        async def drain(each: Database) -> int:
            total = 0
            while (grant := await draw(each, 9, limit=500)).granted:
                total += grant.granted
            return total

        totals = await asyncio.gather(*(drain(each) for each in [db, *others] for _ in range(2)))
        assert sum(totals) == 500
    finally:
        for other in others:
            await other.close()


async def test_a_limiter_admits_from_its_block_and_refuses_once_the_minute_is_spent(db: Database) -> None:
    """Concurrent requests of one process share one reservation at a time; the database is
    asked again only when the block is used, and not at all once the minute is spent."""
    now = [1_800_000_030.0]  # half a minute in
    limiter = RateLimiter(db, 40, clock=lambda: now[0])

    async def request() -> bool:
        if limiter.take("key_1", "op") is not None:
            return True
        try:
            await limiter.admit("key_1", "op")
        except RateLimited as refused:
            assert refused.headers is not None and refused.headers["Retry-After"] == "30"
            return False
        return True

    answers = await asyncio.gather(*(request() for _ in range(100)))
    assert answers.count(True) == 40
    reserved = await draw(db, int(now[0] // 60), limit=40)
    assert reserved == rate_limits.Grant(granted=0, used=40)  # the minute is spent
    now[0] += 30  # the next minute
    assert await request() is True
