"""Benchmark the scheduler: 10,000 schedules due at the same instant, fired by worker processes.

Usage (from the repository root)::

    .venv/bin/python bench/schedules.py [--quick]

For 1 and then 3 ``aichats worker`` processes (``test:echo``, AICHATS_SCHEDULE_MAX_IN_FLIGHT
high enough never to throttle), each on a fresh PostgreSQL database: 10,000 chats (1,000
with ``--quick``), each with an active interval schedule, are seeded with bulk SQL; once
every worker is ready, one UPDATE makes all of them due at the same instant T, a few
seconds ahead. Then it times, from T, until every schedule has fired (a ``runs`` row with
``trigger='schedule'`` and ``scheduled_for=T``) and until every such run has completed,
and gives the lag from T to each run's ``created_at`` (fire lag) and ``started_at``
(start lag). It checks that each schedule fired exactly once.

See ``bench/README.md``. Everything it starts or creates (workers, the PostgreSQL database,
temp files) is stopped or removed before it exits, on Ctrl-C too. Exit status: 0 when every
schedule fired exactly once and every run completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from agent import check_alive, percentile, wait_ready
from common import (
    DEFAULT_POSTGRES,
    BenchError,
    aichats_command,
    aichats_env,
    is_loopback,
    postgres_database,
    run_bench,
    start_process,
    stop,
    warn_if_busy,
)

from aichats import ids
from aichats.clock import now_ms

MODEL = "test:echo"
FULL_SCHEDULES = 10_000
QUICK_SCHEDULES = 1_000
USERS = 100  # the chats are spread over this many users
PROCESS_COUNTS = (1, 3)
INTERVAL_SECONDS = 3600  # the next fire after T is an hour later: none during the measurement
LEAD_MS = 3000  # T is this far after the UPDATE that makes every schedule due
DEADLINE_SECONDS = 600  # a layout taking longer than this (from T) fails the run
POLL_SECONDS = 0.05
SETTLE_SECONDS = 2.5  # after the last completion, wait > 2 scheduling passes, then look for extra fires
# runs.created_at is the scheduling pass's clock (one instant for a whole pass), not when
# each run was inserted: a bench-only trigger records the insert time of each scheduled run.
INSTRUMENT = """
CREATE TABLE bench_fired (run_pk bigint PRIMARY KEY, at_ms bigint NOT NULL);
CREATE FUNCTION bench_fired() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_fired VALUES (NEW.pk, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_fired AFTER INSERT ON runs FOR EACH ROW WHEN (NEW.trigger = 'schedule')
    EXECUTE FUNCTION bench_fired();
"""
PROMPT = "Scheduled check-in for {{date}} {{time}}: anything new?"


# ------------------------------------------------------------------ the database


def migrate(url: str, workdir: Path) -> None:
    done = subprocess.run(
        aichats_command("migrate"),
        capture_output=True,
        text=True,
        cwd=workdir,
        env=aichats_env({"AICHATS_DATABASE_URL": url}),
        timeout=120,
    )
    if done.returncode != 0:
        raise BenchError(f"aichats migrate failed ({done.returncode}):\n{done.stdout}{done.stderr}")


async def seed(url: str, count: int) -> None:
    """``count`` chats over ``USERS`` users, each with an active schedule due in a day
    (so not before :func:`make_due` moves them all to T), via COPY."""
    now = now_ms()
    users = [(pk, ids.new_id(ids.USER), now) for pk in range(1, USERS + 1)]
    chats = [
        (pk, ids.new_id(ids.CHAT), users[pk % USERS][1], f"Scheduled chat {pk}", "all", "general",
         0, 0, now, now, None, now, True)
        for pk in range(1, count + 1)
    ]  # fmt: skip
    later = now + 86_400_000
    schedules = [
        (pk, pk, PROMPT, "UTC", INTERVAL_SECONDS, True, later, later - INTERVAL_SECONDS * 1000, now)
        for pk in range(1, count + 1)
    ]
    connection = await asyncpg.connect(url)
    try:
        await connection.copy_records_to_table("users", records=users, columns=("pk", "id", "created_at"))
        await connection.copy_records_to_table(
            "ai_chats",
            records=chats,
            columns=(
                "pk", "id", "user_id", "title", "notification_preference", "agent_identifier",
                "message_count", "blended_token_usage_micros", "created_at", "updated_at",
                "last_message_at", "activity_at", "has_active_cron",
            ),
        )  # fmt: skip
        await connection.copy_records_to_table(
            "schedules",
            records=schedules,
            columns=(
                "pk", "chat_pk", "prompt", "timezone", "interval_seconds", "active", "next_run_at",
                "created_at", "updated_at",
            ),
        )  # fmt: skip
        for table in ("users", "ai_chats", "schedules"):
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), (SELECT max(pk) FROM {table}))"
            )
        await connection.execute(INSTRUMENT)
        await connection.execute("VACUUM ANALYZE")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def make_due(connection: asyncpg.Connection) -> int:
    """Every schedule due at T = now + LEAD_MS; the interval is anchored so that the
    next instant after T is T + INTERVAL_SECONDS. Returns T (ms)."""
    at = now_ms() + LEAD_MS
    updated = await connection.execute(
        "UPDATE schedules SET next_run_at = $1, created_at = $1 - $2::bigint, last_run_at = NULL",
        at,
        INTERVAL_SECONDS * 1000,
    )
    if updated == "UPDATE 0":
        raise BenchError("no schedule to make due")
    return at


# ------------------------------------------------------------------ one layout


async def measure(url: str, processes: int, concurrency: int, count: int, workdir: Path) -> dict[str, float]:
    connection = await asyncpg.connect(url)
    workers: list[tuple[subprocess.Popen, Path]] = []
    try:
        settings = {
            "AICHATS_DATABASE_URL": url,
            "AICHATS_MODEL": MODEL,
            "AICHATS_SCHEDULE_MAX_IN_FLIGHT": "100000",
            "AICHATS_SCHEDULER_INTERVAL_SECONDS": "1.0",
        }
        for n in range(processes):
            log = workdir / f"worker-{processes}p-{n}.log"
            argv = aichats_command("worker", "--concurrency", str(concurrency))
            workers.append((start_process(argv, log, settings), log))
        await wait_ready(workers)
        at = await make_due(connection)
        fired_wall = completed_wall = None
        deadline = time.monotonic() + LEAD_MS / 1000 + DEADLINE_SECONDS
        while completed_wall is None:
            fired, completed, failed = await connection.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE status = 'completed'),"
                " count(*) FILTER (WHERE status IN ('failed', 'cancelled'))"
                " FROM runs WHERE trigger = 'schedule' AND scheduled_for = $1",
                at,
            )
            wall = time.time() * 1000 - at
            if failed:
                raise BenchError(f"{failed} scheduled runs failed or were cancelled")
            if fired_wall is None and fired >= count:
                fired_wall = wall
            if completed >= count:
                completed_wall = wall
            check_alive(workers)
            if time.monotonic() > deadline:
                raise BenchError(f"after {DEADLINE_SECONDS} s: {fired:,} of {count:,} fired, {completed:,} completed")
            await asyncio.sleep(POLL_SECONDS)
        await asyncio.sleep(SETTLE_SECONDS)  # further passes must find nothing due
        check_alive(workers)
        return await figures(connection, at, count) | {"polled_fired_s": fired_wall / 1000,
                                                         "polled_completed_s": completed_wall / 1000}  # fmt: skip
    finally:
        await connection.close()
        stop(*(process for process, _ in workers))


async def figures(connection: asyncpg.Connection, at: int, count: int) -> dict[str, float]:
    """From the runs table (timestamps written by the workers): spans, lags, duplicates."""
    total, distinct, other = await connection.fetchrow(
        "SELECT count(*) FILTER (WHERE scheduled_for = $1), count(DISTINCT chat_pk) FILTER (WHERE scheduled_for = $1),"
        " count(*) FILTER (WHERE scheduled_for IS DISTINCT FROM $1) FROM runs WHERE trigger = 'schedule'",
        at,
    )
    duplicates = await connection.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM runs WHERE trigger = 'schedule'"
        " GROUP BY chat_pk, scheduled_for HAVING count(*) > 1) d"
    )
    unfired = await connection.fetchval(
        "SELECT count(*) FROM schedules s WHERE NOT EXISTS"
        " (SELECT 1 FROM runs r WHERE r.chat_pk = s.chat_pk AND r.trigger = 'schedule' AND r.scheduled_for = $1)",
        at,
    )
    if total != count or distinct != count or other or duplicates or unfired:
        raise BenchError(
            f"not exactly once: {total:,} runs for T over {distinct:,} chats (want {count:,}),"
            f" {other} runs for another instant, {duplicates} duplicated (chat, instant), {unfired} unfired"
        )
    rows = await connection.fetch(
        "SELECT r.created_at - r.scheduled_for AS fire, f.at_ms - r.scheduled_for AS inserted,"
        " r.started_at - r.scheduled_for AS start, r.finished_at - r.scheduled_for AS finish"
        " FROM runs r JOIN bench_fired f ON f.run_pk = r.pk WHERE r.trigger = 'schedule' AND r.scheduled_for = $1",
        at,
    )
    if len(rows) != count:
        raise BenchError(f"{len(rows):,} scheduled runs were recorded by the insert trigger, not {count:,}")
    fire = [r["fire"] for r in rows]
    inserted = [r["inserted"] for r in rows]
    start = [r["start"] for r in rows]
    first, last = min(inserted), max(inserted)
    return {
        "count": count,
        "first_fire_ms": first,
        "fired_s": last / 1000,
        "completed_s": max(r["finish"] for r in rows) / 1000,
        "fires_per_s": count / max(1e-3, (last - first) / 1000),
        "fire_p50": percentile(fire, 50),
        "fire_p99": percentile(fire, 99),
        "inserted_p50": percentile(inserted, 50),
        "inserted_p99": percentile(inserted, 99),
        "start_p50": percentile(start, 50),
        "start_p99": percentile(start, 99),
    }


# ------------------------------------------------------------------ main


def run(args: argparse.Namespace, workdir: Path) -> None:
    count = QUICK_SCHEDULES if args.quick else FULL_SCHEDULES
    print(f"Scheduler: {count:,} interval schedules all due at the same instant T, PostgreSQL, {MODEL}")
    print(f"  (`aichats worker --concurrency {args.concurrency}` processes, each with its own scheduling pass")
    print("   about every second; times in s / ms from T, from the timestamps the workers wrote)")
    print(
        f"\n  {'procs':>5} {'first fire ms':>13} {'all fired s':>11} {'fires/s':>8} {'all done s':>10}"
        f" {'fire lag p50/p99 ms':>20} {'insert lag p50/p99 ms':>22} {'start lag p50/p99 ms':>21} {'once':>5}",
        flush=True,
    )
    for processes in PROCESS_COUNTS:
        warn_if_busy()
        with postgres_database(args.postgres, args.database) as url:
            migrate(url, workdir)
            asyncio.run(seed(url, count))
            f = asyncio.run(measure(url, processes, args.concurrency, count, workdir))
        fire_lag = f"{f['fire_p50']:,.0f} / {f['fire_p99']:,.0f}"
        insert_lag = f"{f['inserted_p50']:,.0f} / {f['inserted_p99']:,.0f}"
        start_lag = f"{f['start_p50']:,.0f} / {f['start_p99']:,.0f}"
        print(
            f"  {processes:>5} {f['first_fire_ms']:>13,.0f} {f['fired_s']:>11.2f} {f['fires_per_s']:>8,.0f}"
            f" {f['completed_s']:>10.2f} {fire_lag:>20} {insert_lag:>22} {start_lag:>21} {'yes':>5}",
            flush=True,
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the scheduler: many schedules due at once, fired by 1 and 3 worker processes.",
        epilog="See bench/README.md for what each figure means.",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SCHEDULES:,} schedules instead of {FULL_SCHEDULES:,}"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="runs each worker process works on at once")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server (default: %(default)s)")
    parser.add_argument("--database", default="aichats_bench_sched", help="PostgreSQL database it creates and drops")
    args = parser.parse_args(argv)
    if not is_loopback(args.postgres):
        parser.error("--postgres must be on a loopback address")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("sched", lambda workdir: run(args, workdir), "workers stopped, database and temp files removed")


if __name__ == "__main__":
    sys.exit(main())
