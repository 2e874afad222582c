"""The PostgreSQL connection pool (``aichats.storage.pool``): what it lends, what it takes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aichats.storage.pool import Pool, PoolClosed
from tests.support.databases import POSTGRES_ADMIN_URL, _unreachable, skip_without_postgres

pytestmark = pytest.mark.anyio


def _connect() -> Any:
    return asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    try:
        pool = await Pool.open(_connect, max_size=2)
    except (OSError, asyncpg.PostgresError) as error:
        skip_without_postgres(_unreachable(error))
    yield pool
    await pool.close()


async def _backend(pool: Pool) -> int:
    async with pool.connection() as connection:
        pid: int = await connection.fetchval("SELECT pg_backend_pid()")
        return pid


async def test_lends_the_most_recently_returned_connection_again(pool: Pool) -> None:
    first = await _backend(pool)
    assert [await _backend(pool) for _ in range(5)] == [first] * 5
    assert (pool.size, pool.idle) == (1, 1)


async def test_opens_up_to_its_size_and_queues_the_rest_in_order(pool: Pool) -> None:
    started: list[int] = []
    release = asyncio.Event()
    backends: set[int] = set()

    async def borrow(n: int) -> None:
        async with pool.connection() as connection:
            started.append(n)
            backends.add(await connection.fetchval("SELECT pg_backend_pid()"))
            await release.wait()

    tasks = [asyncio.create_task(borrow(n)) for n in range(5)]
    while len(started) < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert started == [0, 1] and pool.size == 2  # three wait: no third connection
    release.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3, 4] and len(backends) == 2 and pool.size == 2


async def test_a_server_error_leaves_the_connection_reusable(pool: Pool) -> None:
    first = await _backend(pool)
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with pool.connection() as connection:
            await connection.fetchval("SELECT 1 / 0")
    with pytest.raises(LookupError):  # the caller's own error, in a transaction: rolled back
        async with pool.connection() as connection, connection.transaction():
            await connection.execute("CREATE TEMPORARY TABLE t (x int)")
            raise LookupError
    assert await _backend(pool) == first
    async with pool.connection() as connection:
        assert not connection.is_in_transaction()
        assert await connection.fetchval("SELECT to_regclass('pg_temp.t')") is None


async def test_a_connection_cancelled_mid_query_is_not_lent_again(pool: Pool) -> None:
    first = await _backend(pool)
    running = asyncio.Event()

    async def slow() -> None:
        async with pool.connection() as connection:
            running.set()
            await connection.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await running.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.size == 0  # terminated, not returned
    assert await _backend(pool) != first  # the next borrower gets a new connection
    async with pool.connection() as connection:
        assert await connection.fetchval("SELECT 41 + 1") == 42


async def test_a_connection_the_server_closed_is_replaced(pool: Pool) -> None:
    first = await _backend(pool)
    killer = await _connect()
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", first)
    finally:
        await killer.close()
    idle = pool._idle[0]
    for _ in range(200):  # the client notices the closed socket once the loop reads it
        if idle.is_closed():
            break
        await asyncio.sleep(0.01)
    assert idle.is_closed()
    assert await _backend(pool) != first
    assert pool.size == 1


async def test_a_waiter_cancelled_as_it_is_handed_a_connection_passes_it_on(pool: Pool) -> None:
    holding = [await pool.acquire(), await pool.acquire()]
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)  # the waiter now waits in the queue
    pool.release(holding.pop())  # handed to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.idle == 1 and pool.size == 2  # the connection came back, not lost
    pool.release(holding.pop())


async def test_close_fails_waiters_and_terminates_what_comes_back(pool: Pool) -> None:
    held = [await pool.acquire(), await pool.acquire()]
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    await pool.close()
    with pytest.raises(PoolClosed):
        await waiter
    for connection in held:
        pool.release(connection)
        assert connection.is_closed()
    assert pool.size == 0
    with pytest.raises(PoolClosed):
        await pool.acquire()


async def test_a_failed_connect_frees_its_place() -> None:
    attempts = 0

    async def failing() -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("no server")

    pool = Pool(failing, max_size=1)
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await pool.acquire()
    assert attempts == 3 and pool.size == 0
