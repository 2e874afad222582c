"""Benchmark notification streams: 150 open streams of one user with 3,000 unread chats.

Usage (from the repository root)::

    .venv/bin/python bench/notifications.py [--backends sqlite,postgresql] [--streams 150]

For each backend: a fresh database (an SQLite file, or a PostgreSQL database dropped at the
end), one user with ``--chats`` chats (3,000), each with an unread reply notification and
its badge, written with the services in one transaction. ``aichats serve`` (no workers)
runs on loopback; ``--streams`` clients open ``GET /api/v1/notifications/events`` and read
everything it sends. Then ``/healthz`` is timed on its own connection, once idle (the
streams open, nothing changing: issue 10 measured 25 s at 200 streams, when each stream
recomputed every badge every second), and once while the user's badges change
``--changes`` times (a chat read, then a new notification, in turn), each change reaching
every stream.

See ``bench/README.md``. Target: /healthz p99 under 0.5 s in both phases. Exit status 0
when met, 1 otherwise (or when a stream did not receive every change).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from common import (
    DEFAULT_POSTGRES,
    BenchError,
    aichats_server,
    is_loopback,
    postgres_database,
    run_bench,
    warn_if_busy,
)

from aichats.services import keys, notifications, users
from aichats.services.chats import NewChat
from aichats.services.messages import NewMessage, create_chat
from aichats.storage import database, migrate
from aichats.storage.schema import ai_chats

TARGET_HEALTHZ_SECONDS = 0.5
IDLE_SECONDS = 10
HEALTHZ_EVERY = 0.1
_CHAT = sa.select(ai_chats).where(ai_chats.c.pk == sa.bindparam("pk"))


async def seed(url: str, chat_count: int) -> tuple[str, str, list[int]]:
    """A user with ``chat_count`` unread chats: its id, its key and the chats' primary keys."""
    db = await database.connect(url, pool_size=1)
    try:
        user_id = await users.create_user(db)
        _, secret = await keys.create_key(db, user_id)
        pks = []
        async with db.transaction() as tx:
            for n in range(chat_count):
                chat = await create_chat(tx, user_id, NewChat(NewMessage(f"chat {n}"), title=f"Chat {n}"))
                await notifications.notify(tx, chat, kind="ai_chat.reply", title=chat["title"], body="reply")
                pks.append(chat["pk"])
        return user_id, secret, pks
    finally:
        await db.close()


class Streams:
    """``count`` notification streams, read to the end by raw asyncio connections."""

    def __init__(self, port: int, key: str, count: int) -> None:
        self.port, self.key, self.count = port, key, count
        self.events = [0] * count  # ``badges`` events received by each stream
        self.bytes = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        self.tasks = [asyncio.create_task(self._read(n)) for n in range(self.count)]
        await self.until(lambda: all(self.events), 60, "every stream's first event")

    async def _read(self, n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 24)
        request = (
            "GET /api/v1/notifications/events HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {self.key}\r\nAccept: text/event-stream\r\n\r\n"
        )
        writer.write(request.encode())
        try:
            while line := await reader.readline():
                self.bytes += len(line)
                if line.startswith(b"event: badges"):
                    self.events[n] += 1
        finally:
            writer.close()

    async def until(self, check, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {what}")
            if any(task.done() for task in self.tasks):
                raise BenchError("a stream ended")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


async def healthz_latencies(port: int, stop: asyncio.Event) -> list[float]:
    """``GET /healthz`` every ``HEALTHZ_EVERY`` s on one keep-alive connection until ``stop``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    try:
        while not stop.is_set():
            started = time.perf_counter()
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(HEALTHZ_EVERY)
    finally:
        writer.close()
    return latencies


async def change_badges(url: str, user_pks: list[int], user_id: str, changes: int, streams: Streams) -> None:
    """Change the user's badges ``changes`` times, waiting each time until every stream has it."""
    db = await database.connect(url, pool_size=1)
    try:
        for n in range(changes):
            before = list(streams.events)
            pk = user_pks[n // 2]
            if n % 2 == 0:
                await notifications.read_chat(db, user_id, pk)
            else:
                async with db.transaction() as tx:
                    chat = await tx.fetch_one(_CHAT, {"pk": pk})
                    assert chat is not None
                    await notifications.notify(tx, chat, kind="ai_chat.reply", title="again", body="reply")
            reached = lambda b=before: all(e > o for e, o in zip(streams.events, b, strict=True))  # noqa: E731
            await streams.until(reached, 30, "a change")
    finally:
        await db.close()


def summary(name: str, latencies: list[float]) -> tuple[str, float]:
    ordered = sorted(latencies)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    line = f"  {name:<28} /healthz p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  max {ordered[-1] * 1000:7.1f} ms"
    return line + f"  ({len(ordered)} requests)", p99


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> bool:
    print(f"\n{backend}: {args.chats:,} unread chats, {args.streams} streams", flush=True)
    if backend == "sqlite":
        return measure(f"sqlite:///{workdir / 'bench.db'}", args, workdir)
    with postgres_database(args.postgres, "aichats_bench_notifications") as url:
        return measure(url, args, workdir)


def measure(url: str, args: argparse.Namespace, workdir: Path) -> bool:
    migrate.upgrade(url)
    started = time.perf_counter()
    user_id, key, pks = asyncio.run(seed(url, args.chats))
    print(f"  seeded in {time.perf_counter() - started:.1f} s", flush=True)
    with aichats_server(url, workdir, {"AICHATS_WORKERS": "0", "AICHATS_MIGRATE_ON_START": "false"}) as base:
        port = int(base.rsplit(":", 1)[1])
        return asyncio.run(_phases(url, port, key, user_id, pks, args))


async def _phases(url: str, port: int, key: str, user_id: str, pks: list[int], args: argparse.Namespace) -> bool:
    streams = Streams(port, key, args.streams)
    opened = time.perf_counter()
    await streams.open()
    print(f"  {args.streams} streams open, first state received, in {time.perf_counter() - opened:.1f} s")
    print(f"  first answer (headers and state) {streams.bytes // args.streams:,} bytes per stream")
    ok = True
    try:
        stop = asyncio.Event()
        probe = asyncio.create_task(healthz_latencies(port, stop))
        await asyncio.sleep(IDLE_SECONDS)
        stop.set()
        idle_events = sum(streams.events) - args.streams
        line, p99 = summary(f"idle {IDLE_SECONDS} s", await probe)
        print(line + f"; events sent while idle: {idle_events}")
        ok &= p99 < TARGET_HEALTHZ_SECONDS and idle_events == 0

        stop = asyncio.Event()
        probe = asyncio.create_task(healthz_latencies(port, stop))
        changing = time.perf_counter()
        await change_badges(url, pks, user_id, args.changes, streams)
        elapsed = time.perf_counter() - changing
        stop.set()
        line, p99 = summary(f"{args.changes} changes", await probe)
        print(line + f"; each change reached all {args.streams} streams, {elapsed / args.changes * 1000:.0f} ms each")
        ok &= p99 < TARGET_HEALTHZ_SECONDS
    finally:
        streams.close()
    print(f"  target: /healthz p99 < {TARGET_HEALTHZ_SECONDS} s: {'met' if ok else 'MISSED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--streams", type=int, default=150)
    parser.add_argument("--chats", type=int, default=3_000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server URL, without a database")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "postgresql" in backends and not is_loopback(args.postgres):
        raise SystemExit("--postgres must be on loopback: the benchmark drops the database it creates")

    def body(workdir: Path) -> int:
        warn_if_busy()
        results = [run_backend(backend, args, workdir) for backend in backends]
        return 0 if all(results) else 1

    return run_bench("notifications", body, "servers stopped, database dropped")


if __name__ == "__main__":
    sys.exit(main())
