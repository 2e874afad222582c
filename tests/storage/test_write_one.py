"""One writing statement as a transaction of its own (``Database.write_one``), on both
databases: its row comes back, it commits, and a unique violation is translated."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from aichats.storage.database import Database, UniqueViolation
from aichats.storage.schema import users

pytestmark = pytest.mark.anyio

_INSERT_USER = sa.insert(users).values(id=sa.bindparam("id"), created_at=0).returning(users.c.pk, users.c.id)
_USER_IDS = sa.select(users.c.id).where(users.c.id.startswith(sa.bindparam("prefix"))).order_by(users.c.id)


async def stored(db: Database, prefix: str) -> list[str]:
    return [row["id"] for row in await db.fetch_all(_USER_IDS, {"prefix": prefix})]


async def test_its_row_comes_back_and_it_commits(db: Database) -> None:
    row = await db.write_one(_INSERT_USER, {"id": "user_write_one"})
    assert row is not None and row["id"] == "user_write_one" and isinstance(row["pk"], int)
    assert await stored(db, "user_write_one") == ["user_write_one"]
    nothing = sa.update(users).where(users.c.id == "user_write_none").values(created_at=1).returning(users.c.pk)
    assert await db.write_one(nothing) is None


async def test_a_unique_violation_is_translated_and_the_connection_given_back(db: Database) -> None:
    await db.write_one(_INSERT_USER, {"id": "user_write_taken"})
    for _ in range(3):  # more than the test pool's connections: none is kept by a failure
        with pytest.raises(UniqueViolation):
            await asyncio.wait_for(db.write_one(_INSERT_USER, {"id": "user_write_taken"}), 5)
    assert await asyncio.wait_for(db.write_one(_INSERT_USER, {"id": "user_write_after"}), 5) is not None
    assert await stored(db, "user_write_") == ["user_write_after", "user_write_taken"]
