"""The agent turns' share of the process's database connections.

A process runs hundreds of turns at once (``AICHATS_WORKERS``), and each writes: its
reply's start, deltas, completion. Through the process's pool (``AICHATS_POSTGRES_POOL_SIZE``
connections, callers served in order) a burst of turns would queue hundreds of statements
ahead of every API request: measured with 500 turns answering at once, the API's
``retrieve`` went from 1.7 to 257 ms (p50) and 2 s (p99) (``bench/slow_model.py``). So the
turns go through a :class:`Share`: at most half the pool's connections at once, the other
half always there for the API, the claims, the leases and the scheduler. On SQLite, whose
one writer serves transactions in order, it bounds the same way how many turn
transactions an API write can find ahead of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa

from aichats.storage.database import NO_PARAMS, Connection, Database, Listener, Params, Row


def turn_slots(pool_size: int) -> int:
    """Connections the turns may hold at once: half the pool (at least one)."""
    return max(1, pool_size // 2)


class Share:
    """``db`` for callers that may hold at most ``slots`` of its connections at once (a
    read, or a whole transaction, each holds one); the others wait their turn, in order.

    It does not own ``db``: closing it closes nothing.
    """

    def __init__(self, db: Database, slots: int) -> None:
        self._db = db
        self._slots = asyncio.Semaphore(slots)
        self.dialect = db.dialect
        self.url = db.url

    @property
    def listening(self) -> bool:
        return self._db.listening

    def others_stamp(self) -> int:
        return self._db.others_stamp()

    async def listen(self, channel: str, listener: Listener) -> None:
        await self._db.listen(channel, listener)

    async def fetch_one(self, statement: sa.Executable, params: Params = NO_PARAMS) -> Row | None:
        async with self._slots:
            return await self._db.fetch_one(statement, params)

    async def fetch_all(self, statement: sa.Executable, params: Params = NO_PARAMS) -> list[Row]:
        async with self._slots:
            return await self._db.fetch_all(statement, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._slots, self._db.transaction() as tx:
            yield tx

    async def run_grouped(self, statement: sa.Executable, params: Params) -> None:
        async with self._slots:  # holds a slot while its group waits: at most one connection
            await self._db.run_grouped(statement, params)

    async def write_one(self, statement: sa.Executable, params: Params = NO_PARAMS) -> Row | None:
        async with self._slots:
            return await self._db.write_one(statement, params)

    async def fetch_one_grouped(self, statement: sa.Executable, params: Params) -> Row | None:
        async with self._slots:
            return await self._db.fetch_one_grouped(statement, params)

    async def close(self) -> None:
        """Nothing: the database is its owner's to close."""
