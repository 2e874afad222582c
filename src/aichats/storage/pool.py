"""A pool of asyncpg connections, lighter than ``asyncpg.Pool``.

Why not asyncpg's own pool: measured on these machines (32 tasks, each running a one-row
primary-key select on a connection it borrows), ``asyncpg.Pool`` answered about 10,000
queries/s and this pool about 25,000 (`bench/pool.py`). asyncpg's release runs through
``asyncio.shield`` (a new task per release), wraps every connection in a proxy, and hands
idle connections out first-in first-out, so consecutive queries wake different server
backends. Here a release is a plain function call and the most recently used idle
connection goes out first.

What it keeps from asyncpg's pool:

- connections open on demand, up to ``max_size``; callers beyond that wait in order;
- a connection found closed (the server restarted, the backend was terminated) is dropped
  and a new one opened in its place;
- a connection whose borrower was cancelled, timed out or lost the protocol mid-query is
  terminated rather than reused, since a query may still be in flight on it. Ordinary
  errors (a constraint violation, a service error inside a transaction, which the
  transaction's own block has rolled back) leave it reusable.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class PoolClosed(asyncpg.InterfaceError):
    """The pool was closed while a caller waited for a connection, or before it asked."""


class Pool:
    def __init__(self, connect: Connect, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("a pool needs at least one connection")
        self._connect = connect
        self.max_size = max_size
        self._idle: list[asyncpg.Connection] = []  # the most recently released last
        # Each waiter gets a connection, or None: a place was freed, open a connection of its own.
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._size = 0  # connections open or being opened
        self._closed = False

    @classmethod
    async def open(cls, connect: Connect, max_size: int) -> Pool:
        """A pool with one connection open already: a wrong URL or a server down fails here."""
        pool = cls(connect, max_size)
        pool._size = 1
        try:
            pool._idle.append(await connect())
        except BaseException:
            pool._size = 0
            raise
        return pool

    @property
    def size(self) -> int:
        return self._size

    @property
    def idle(self) -> int:
        return len(self._idle)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Borrow a connection for the block; it goes back (or is terminated) when it ends."""
        connection = await self.acquire()
        try:
            yield connection
        except BaseException as error:
            self.release(connection, error)
            raise
        self.release(connection)

    async def acquire(self) -> asyncpg.Connection:
        """Borrow a connection; every one borrowed must be given back with :meth:`release`.
        (:meth:`connection` does both; these two are for the hottest callers, which a
        context manager's generator would cost a microsecond each.)"""
        while True:
            if self._closed:
                raise PoolClosed("the connection pool is closed")
            while self._idle:
                connection = self._idle.pop()
                if not connection.is_closed():
                    return connection
                self._size -= 1
            if self._size < self.max_size:
                self._size += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._size -= 1
                    self._hand_place()
                    raise
            waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                # Handed something just as the caller was cancelled: pass it on, not lose it.
                if waiter.done() and not waiter.cancelled():
                    if (given := waiter.result()) is not None:
                        self._release(given, reusable=True)
                    else:
                        self._hand_place()
                raise
            if handed is not None:
                return handed
            # None: a place was freed; loop to open a connection in it (or take an idle one).

    def release(self, connection: asyncpg.Connection, error: BaseException | None = None) -> None:
        """Give back a connection borrowed with :meth:`acquire`, with the error that ended
        its use, if any (one a connection does not survive gets it terminated)."""
        self._release(connection, reusable=error is None or _survives(error))

    def _release(self, connection: asyncpg.Connection, *, reusable: bool) -> None:
        if not reusable or self._closed or connection.is_closed() or connection.is_in_transaction():
            if not connection.is_closed():
                connection.terminate()
            self._size -= 1
            self._hand_place()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def _hand_place(self) -> None:
        """A place was freed: the first waiter, if any, opens a connection in it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close the idle connections now; those lent out are terminated when they come back."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool is closed"))
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        await asyncio.gather(*(connection.close(timeout=5) for connection in idle), return_exceptions=True)


def _survives(error: BaseException) -> bool:
    """Whether a connection is still fit for reuse after its borrower's block raised ``error``.

    A server-side error leaves the protocol in sync, and an error of the caller's own code
    happens between queries. A cancellation (timeouts included) or a protocol or network
    error may leave a query in flight: that connection is not handed to anyone else.
    """
    # TimeoutError is an OSError; asyncpg's lost connection an InterfaceError.
    return isinstance(error, Exception) and not isinstance(error, asyncpg.InterfaceError | OSError)
