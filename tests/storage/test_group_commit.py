"""SQLite's group commit (``SQLiteDatabase.transaction``): transactions of the same turn of
the event loop share one COMMIT, and each still stands or falls alone, and returns only once
what it wrote is committed."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
import sqlalchemy as sa

from aichats.storage import database
from aichats.storage.database import Connection, SQLiteDatabase
from aichats.storage.schema import users

# SQLite only: the test's own database (``db``) on that backend.
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

INSERT = sa.insert(users).values(id=sa.bindparam("id"), created_at=0)
COUNT = sa.select(sa.func.count()).select_from(users).where(users.c.id.like("g%"))


def commits_of(db: SQLiteDatabase) -> list[str]:
    """The COMMITs the writer runs from now on."""
    seen: list[str] = []
    db._writer.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def stored(db: SQLiteDatabase) -> set[str]:
    """The test's users, as another connection (another process) sees them: committed only."""
    with sqlite3.connect(database.sqlite_path(db.url)) as other:
        return {row[0] for row in other.execute("SELECT id FROM users WHERE id LIKE 'g%'")}


async def insert(db: SQLiteDatabase, user_id: str, *, fail: bool = False) -> str:
    async with db.transaction() as tx:
        await tx.execute(INSERT, {"id": user_id})
        if fail:
            raise ValueError(f"{user_id} fails")
    assert user_id in stored(db)  # committed by the time its transaction returns
    return user_id


async def test_one_turn_one_commit_each_failure_alone(db: SQLiteDatabase) -> None:
    commits = commits_of(db)
    results = await asyncio.gather(*(insert(db, f"g{n}", fail=n % 3 == 1) for n in range(9)), return_exceptions=True)
    assert [isinstance(result, ValueError) for result in results] == [n % 3 == 1 for n in range(9)]
    assert stored(db) == {f"g{n}" for n in range(9) if n % 3 != 1}
    assert commits == ["COMMIT"]  # nine transactions, six of them kept, one COMMIT
    # Alone, a transaction commits at once, as before.
    await insert(db, "g_alone")
    assert commits == ["COMMIT", "COMMIT"]


async def test_a_batch_has_a_bounded_size(db: SQLiteDatabase) -> None:
    commits = commits_of(db)
    await asyncio.gather(*(insert(db, f"g{n}") for n in range(database.MAX_BATCH * 2 + 1)))
    assert len(stored(db)) == database.MAX_BATCH * 2 + 1
    assert len(commits) == 3


async def test_notifications_go_out_after_the_commit_and_only_for_kept_members(db: SQLiteDatabase) -> None:
    heard: list[tuple[str | None, set[str]]] = []
    await db.listen("ch", lambda payload: heard.append((payload, stored(db))))

    async def member(user_id: str, fail: bool) -> None:
        async with db.transaction() as tx:
            await tx.execute(INSERT, {"id": user_id})
            await tx.notify("ch", user_id)
            if fail:
                raise ValueError

    await asyncio.gather(member("g1", False), member("g2", True), member("g3", False), return_exceptions=True)
    assert heard == [("g1", {"g1", "g3"}), ("g3", {"g1", "g3"})]  # each told once, with both committed


async def test_a_member_cancelled_while_its_batch_commits_is_still_committed(db: SQLiteDatabase) -> None:
    heard: list[str | None] = []
    await db.listen("ch", heard.append)

    async def member(user_id: str) -> None:
        async with db.transaction() as tx:
            await tx.execute(INSERT, {"id": user_id})
            await tx.notify("ch", user_id)

    first = asyncio.create_task(member("g1"))
    second = asyncio.create_task(member("g2"))
    await asyncio.sleep(0)  # both ran their statements and wait for the commit
    first.cancel()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert stored(db) == {"g1", "g2"} and heard == ["g1", "g2"]  # the commit is the batch's, not the task's


async def test_a_member_that_loses_the_whole_transaction_fails_the_batch(db: SQLiteDatabase) -> None:
    """When SQLite rolls back the whole transaction (a full disk), the members that had
    already finished must not report a commit that never happened."""

    async def full_disk(user_id: str) -> None:
        async with db.transaction() as tx:
            await tx.execute(INSERT, {"id": user_id})
            db._writer.execute("ROLLBACK")  # what SQLite does by itself on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")

    results = await asyncio.gather(insert(db, "g1"), full_disk("g2"), return_exceptions=True)
    assert isinstance(results[0], database.DatabaseError)
    assert isinstance(results[1], sqlite3.OperationalError)
    assert stored(db) == set()
    assert await insert(db, "g3") == "g3"  # the next transaction starts a new batch


async def test_a_failed_commit_fails_every_member(db: SQLiteDatabase) -> None:
    async def deferred_violation(tx: Connection) -> None:
        # A constraint checked at COMMIT: a deferred foreign key to a user that does not exist.
        await tx.execute(sa.text("PRAGMA defer_foreign_keys=ON"))
        await tx.execute(
            sa.text(
                "INSERT INTO api_keys (id, user_id, key_hash, prefix, scopes, created_at) "
                "VALUES ('key_x', 'nobody', 'h', 'p', '', 0)"
            )
        )

    async def member(user_id: str, break_it: bool) -> None:
        async with db.transaction() as tx:
            await tx.execute(INSERT, {"id": user_id})
            if break_it:
                await deferred_violation(tx)

    results = await asyncio.gather(member("g1", False), member("g2", True), return_exceptions=True)
    assert all(isinstance(result, sqlite3.IntegrityError) for result in results), results
    assert stored(db) == set()
    assert await insert(db, "g3") == "g3"


async def test_another_process_write_is_waited_for_without_blocking_the_loop(db: SQLiteDatabase) -> None:
    other = sqlite3.connect(database.sqlite_path(db.url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writes
    other.execute("INSERT INTO users (id, created_at) VALUES ('g_other', 0)")
    asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(tick())
    try:
        assert await insert(db, "g1") == "g1"
    finally:
        ticking.cancel()
        other.close()
    assert stored(db) == {"g_other", "g1"}
    assert ticks >= 10  # the loop went on while the write waited (SQLite's own wait would block it)


async def test_a_write_that_waits_too_long_fails_and_changes_nothing(
    db: SQLiteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_SECONDS", 0.2)
    other = sqlite3.connect(database.sqlite_path(db.url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await insert(db, "g1")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await insert(db, "g2") == "g2"
    assert stored(db) == {"g2"}
