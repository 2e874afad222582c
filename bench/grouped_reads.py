"""One-row reads on PostgreSQL, one at a time against grouped: ``Database.fetch_one`` against
``Database.fetch_one_grouped`` (``aichats.storage.database.GroupedRead``).

Tasks each run a one-row primary-key select and wait for its row, as the API's ``retrieve``
does, through the server's own ``PostgresDatabase`` (10 connections). The two ways run
alternately, so a busy machine weighs on both alike. Besides reads a second it prints the
CPU each read cost this process and the whole machine (PostgreSQL's backends included):
the server and PostgreSQL share this machine's CPUs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa
import uvloop
from common import DEFAULT_POSTGRES, warn_if_busy

from aichats.storage.database import Database, Row, connect

READ = sa.text("SELECT oid, datname FROM pg_database WHERE oid = :oid")
TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has spent, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICKS  # all but idle and iowait


async def rate(read: Callable[[], Awaitable[Row | None]], tasks: int, reads: int) -> tuple[float, float, float]:
    """(reads a second, this process's CPU µs a read, the machine's CPU µs a read)."""

    async def task() -> None:
        for _ in range(reads // tasks):
            assert await read() is not None

    done = reads // tasks * tasks
    started, cpu, machine = time.perf_counter(), time.process_time(), machine_busy_seconds()
    await asyncio.gather(*(task() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    cpu, machine = time.process_time() - cpu, machine_busy_seconds() - machine
    return done / elapsed, cpu / done * 1e6, machine / done * 1e6


async def run(url: str, tasks_list: list[int], reads: int, size: int, rounds: int) -> None:
    db: Database = await connect(url, pool_size=size)
    row = await db.fetch_one(sa.text("SELECT oid FROM pg_database WHERE datname = current_database()"))
    assert row is not None
    params = {"oid": row["oid"]}
    ways: dict[str, Callable[[], Awaitable[Row | None]]] = {
        "alone": lambda: db.fetch_one(READ, params),
        "grouped": lambda: db.fetch_one_grouped(READ, params),
    }
    print(f"{size} connections, {reads:,} reads a round, {rounds} rounds each; medians (reads/s: min-max)")
    print(f"  {'tasks':>5}  {'way':<8} {'reads/s':>9} {'range':>17} {'CPU µs/read':>12} {'machine µs/read':>16}")
    for tasks in tasks_list:
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
        for read in ways.values():
            await rate(read, tasks, reads // 4)  # warm-up: connections opened, statements prepared
        for _ in range(rounds):
            for name, read in ways.items():
                figures[name].append(await rate(read, tasks, reads))
        for name, results in figures.items():
            per_second, cpu, machine = (statistics.median(column) for column in zip(*results, strict=True))
            low, high = min(r[0] for r in results), max(r[0] for r in results)
            spread = f"{low:,.0f}-{high:,.0f}"
            print(f"  {tasks:>5}  {name:<8} {per_second:>9,.0f} {spread:>17} {cpu:>12.1f} {machine:>16.1f}")
    await db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See bench/README.md.")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES + "/postgres", help="database to query")
    parser.add_argument("--tasks", default="1,4,32", help="concurrent readers, comma-separated (default: 1,4,32)")
    parser.add_argument("--size", type=int, default=10, help="connections (default: 10, as the server)")
    parser.add_argument("--reads", type=int, default=20_000, help="reads per round (default: 20,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per way (default: 5)")
    args = parser.parse_args()
    warn_if_busy()
    uvloop.run(run(args.postgres, [int(n) for n in args.tasks.split(",")], args.reads, args.size, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
