"""Statements outside a transaction (``Database.fetch_one`` / ``fetch_all``), on both
databases: they borrow and give back their connection themselves (no context manager on
this hot path), so every way out must give it back, and translate a unique violation."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from aichats.storage.database import Database, PostgresDatabase, UniqueViolation
from aichats.storage.schema import users

pytestmark = pytest.mark.anyio

POOL_SIZE = 2
_INSERT_USER = sa.insert(users).values(id=sa.bindparam("id"), created_at=0).returning(users.c.pk)
# An error at run time on both: SQLite's "integer overflow", PostgreSQL's "bigint out of range".
_OVERFLOW = sa.select(sa.func.abs(sa.bindparam("n", type_=sa.BigInteger)).label("n"))
SMALLEST = -(2**63)
_SLEEP = sa.select(sa.func.pg_sleep(sa.bindparam("seconds", type_=sa.Float)))
_BACKEND = sa.select(sa.func.pg_backend_pid())


@pytest.fixture
def pool_size() -> int:
    return POOL_SIZE


async def test_a_unique_violation_outside_a_transaction_is_translated(db: Database) -> None:
    assert await db.fetch_one(_INSERT_USER, {"id": "user_reads"}) is not None
    for fetch in (db.fetch_one, db.fetch_all):
        with pytest.raises(UniqueViolation):
            await fetch(_INSERT_USER, {"id": "user_reads"})
    rows = await db.fetch_all(sa.select(users.c.id).where(users.c.id == "user_reads"))
    assert [row["id"] for row in rows] == ["user_reads"]


async def test_failed_statements_give_their_connection_back(db: Database) -> None:
    """More failures than PostgreSQL's pool has connections, then a read that still gets
    one (a connection kept by a failure would leave it waiting for ever)."""
    for _ in range(POOL_SIZE + 1):
        for fetch in (db.fetch_one, db.fetch_all):
            with pytest.raises(Exception, match=r"overflow|out of range"):
                await asyncio.wait_for(fetch(_OVERFLOW, {"n": SMALLEST}), 5)
    row = await asyncio.wait_for(db.fetch_one(_OVERFLOW, {"n": -42}), 5)
    assert row is not None and row["n"] == 42


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite's reads never wait
async def test_a_cancelled_read_ends_its_postgresql_connection(db: Database) -> None:
    """A read cancelled with its query in flight: that connection is terminated, not lent
    to the next borrower, who gets another one and an answer."""
    assert isinstance(db, PostgresDatabase)
    first = await db.fetch_one(_BACKEND)
    assert first is not None
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(db.fetch_one(_SLEEP, {"seconds": 5}), 0.2)
    after = await asyncio.wait_for(db.fetch_one(_BACKEND), 5)
    assert after is not None and after[0] != first[0]
    assert db._pool.size == 1
