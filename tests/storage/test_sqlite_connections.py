"""How an SQLite database's two connections (the writer and the reader) are set up."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from aichats.storage.database import SQLiteDatabase

pytestmark = pytest.mark.anyio


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
