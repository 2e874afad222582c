"""How an SQLite database's two connections (the writer and the reader) are set up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3

import pytest
import sqlalchemy as sa

from aichats.storage.database import SQLiteDatabase

# SQLite only: the test's own database (``db``) on that backend.
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]


def pragma(connection: sqlite3.Connection, name: str) -> object:
    return connection.execute(f"PRAGMA {name}").fetchone()[0]


async def test_no_connection_reads_through_a_memory_map(db: SQLiteDatabase) -> None:
    """A connection drops its whole map at each commit of another connection (then faults
    every page in again), and the reader sees every commit of the writer: with the 256 MiB
    map they had, a list page took 3 to 4 page faults under commits, and 0.1 without
    (bench/README.md, fifth session). Whatever the build's default, neither maps the file."""
    for connection in (db._writer, db._reader._connection):
        assert pragma(connection, "mmap_size") == 0
        assert pragma(connection, "journal_mode") == "wal"


async def test_the_reader_caches_a_thousand_users_first_pages(db: SQLiteDatabase) -> None:
    """bench/api.py's first list pages touch about 84 MiB of pages (a table page per chat):
    with a 32 MiB cache, as the writer's, the reader read most of them again for each page."""
    assert pragma(db._reader._connection, "cache_size") == -128 * 1024
    assert pragma(db._writer, "cache_size") == -32 * 1024


async def test_another_processs_commits_are_looked_for_once_per_turn_of_the_loop(db: SQLiteDatabase) -> None:
    """``others_stamp`` (read by the key cache at every request) costs a read transaction
    (two file locks) on the writer: once per turn of the event loop, for every request that
    turn serves, then again in the next turn, which sees another process's commit."""
    readings: list[str] = []
    db._writer.set_trace_callback(lambda sql: readings.append(sql) if "data_version" in sql else None)
    first = db.others_stamp()
    assert db.others_stamp() == first and len(readings) == 1
    other = sqlite3.connect(db.url.removeprefix("sqlite:///"))
    other.execute("INSERT INTO users (id, created_at) VALUES ('user_other', 0)")
    other.commit()
    other.close()
    assert db.others_stamp() == first and len(readings) == 1  # this turn's reading
    await asyncio.sleep(0)
    assert db.others_stamp() != first and len(readings) == 2


def _open_temporary_files() -> list[str]:
    """SQLite's temporary files this process holds open (made, then unlinked at once)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if "etilqs_" in os.readlink(f"/proc/self/fd/{fd}"):
                found.append(fd)
    return found


async def test_a_batchs_statement_journal_stays_in_memory(db: SQLiteDatabase) -> None:
    """Each transaction is a savepoint of its batch's one SQLite transaction: the pages it
    changes first go to a statement journal, which SQLite spilled into a temporary file
    past 64 KiB (an open, an unlink and a pwrite per page: 36 a created chat). With
    ``temp_store=MEMORY`` on both connections there is no such file."""
    for connection in (db._writer, db._reader._connection):
        assert pragma(connection, "temp_store") == 2  # MEMORY
    async with db.transaction() as tx:
        for n in range(5_000):
            await tx.execute(
                sa.text("INSERT INTO users (id, created_at) VALUES (:id, 0)"), {"id": f"user_{n:05}_{'x' * 40}"}
            )
    async with db.transaction() as tx:  # the savepoint journals every page it changes: 300 KiB
        assert await tx.execute(sa.text("UPDATE users SET created_at = 1")) == 5_000
        assert _open_temporary_files() == []
