"""Connection pools side by side: asyncpg's own ``Pool`` against ``aichats.storage.pool.Pool``.

Tasks each borrow a connection, run a one-row select by primary key, and give it back, as
the API's reads do. Both pools get the same server, size and connection settings, and run
alternately, so a busy machine weighs on both alike. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import asyncpg
import uvloop
from common import DEFAULT_POSTGRES, warn_if_busy

from aichats.storage.pool import Pool

QUERY = "SELECT oid, datname FROM pg_database WHERE oid = $1"


async def run(url: str, tasks: int, queries: int, size: int, rounds: int) -> None:
    def connect() -> Awaitable[asyncpg.Connection]:
        return asyncpg.connect(url)

    theirs = await asyncpg.create_pool(url, min_size=size, max_size=size)
    ours = await Pool.open(connect, size)
    oid = await theirs.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")

    async def with_theirs() -> None:
        async with theirs.acquire() as connection:
            await connection.fetchrow(QUERY, oid)

    async def with_ours() -> None:
        async with ours.connection() as connection:
            await connection.fetchrow(QUERY, oid)

    async def rate(borrow: Callable[[], Awaitable[None]]) -> float:
        async def task() -> None:
            for _ in range(queries // tasks):
                await borrow()

        started = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(tasks)))
        return queries // tasks * tasks / (time.perf_counter() - started)

    figures: dict[str, list[float]] = {"asyncpg.Pool": [], "aichats Pool": []}
    await rate(with_theirs)  # warm-up: every connection opened, every statement prepared
    await rate(with_ours)
    for _ in range(rounds):
        figures["asyncpg.Pool"].append(await rate(with_theirs))
        figures["aichats Pool"].append(await rate(with_ours))
    await theirs.close()
    await ours.close()
    print(f"{tasks} tasks, {size} connections, {queries:,} queries a round, {rounds} rounds")
    print("median (min-max) queries/s:")
    for name, values in figures.items():
        print(f"  {name:<14} {statistics.median(values):>9,.0f}  ({min(values):,.0f}-{max(values):,.0f})")
    ratio = statistics.median(figures["aichats Pool"]) / statistics.median(figures["asyncpg.Pool"])
    print(f"  aichats Pool / asyncpg.Pool: {ratio:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See bench/README.md.")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES + "/postgres", help="database to query")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent borrowers (default: 32)")
    parser.add_argument("--size", type=int, default=10, help="connections per pool (default: 10, as the server)")
    parser.add_argument("--queries", type=int, default=20_000, help="queries per round (default: 20,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per pool (default: 5)")
    args = parser.parse_args()
    warn_if_busy()
    uvloop.run(run(args.postgres, args.tasks, args.queries, args.size, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
