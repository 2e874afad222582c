"""Benchmark turns in flight: many chats at once against a model that answers after 2 s.

Usage (from the repository root)::

    .venv/bin/python bench/slow_model.py [--chats 500] [--delay 2] [--quick]

A protocol-level OpenAI-compatible server (``bench/model_server.py``) answers every
request after ``--delay`` seconds. One ``aichats serve`` on a new PostgreSQL database, with
its default settings but ``AICHATS_MODEL=openai:slow`` and ``OPENAI_BASE_URL``, gets
``--chats`` chats POSTed at once. The target: all answered within 30 s.

Figures: the time from the first POST until every reply was completed, each chat's time
from its POST to its completed reply (p50, p99), the same burst sent to the model server
alone (the ceiling: no aichats between), and the API's own ``retrieve`` latency while
the turns run against the same call on the idle server (the turns must not starve the API).

See ``bench/README.md``. Everything it starts or creates is stopped or removed before it
exits, on Ctrl-C too. Exit status: 0 when the target is met, 1 otherwise or on a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import openai
from common import (
    CHATS,
    DEFAULT_POSTGRES,
    BenchError,
    aichats_server,
    api_call,
    connect,
    create_key,
    is_loopback,
    ms,
    percentile,
    postgres_database,
    run_bench,
    server,
    warn_if_busy,
)

TARGET_SECONDS = 30.0  # every chat of the burst answered within this, from the first POST
POST_CLIENTS = 50  # threads POSTing the burst, each on its own keep-alive connection
PROBE_SECONDS = 2.0  # the API's retrieve measured on the idle server this long
PROBE_PAUSE = 0.01  # between two probes
POLL_SECONDS = 0.05  # how often the database is asked how many replies are done
STALL_SECONDS = 60  # no reply completing for this long fails the run
MODEL = "openai:slow"


@dataclass(frozen=True)
class Burst:
    posted: float  # seconds from the first POST to the last POST's answer
    answered: float  # seconds from the first POST to the last completed reply
    per_chat: list[float]  # each chat's seconds from its POST to its completed reply


# ------------------------------------------------------------------ the ceiling


async def model_alone(base_url: str, chats: int) -> float:
    """Seconds for the model server alone to answer ``chats`` streamed requests sent at
    once (the official SDK, as aichats uses it): the best aichats could do."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)

    async def one(n: int) -> None:
        stream = await client.chat.completions.create(
            model="slow",
            messages=[{"role": "user", "content": f"Chat {n}, please answer."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(chats)))
        return time.perf_counter() - started
    finally:
        await client.close()


# ------------------------------------------------------------------ the burst


class Probe:
    """``GET /ai_chats/{id}`` in a loop on one keep-alive connection, each timed."""

    def __init__(self, base: str, key: str, chat_id: str) -> None:
        self.base, self.key, self.path = base, key, f"{CHATS}/{chat_id}"
        self.latencies: list[float] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise BenchError(f"the API probe failed: {self.error}")

    def _run(self) -> None:
        try:
            with closing(connect(self.base)) as connection:
                while not self._stop.is_set():
                    started = time.perf_counter()
                    api_call(connection, "GET", self.path, self.key)
                    self.latencies.append(time.perf_counter() - started)
                    time.sleep(PROBE_PAUSE)
        except BaseException as error:  # reported by __exit__
            self.error = error


def post_burst(base: str, key: str, chats: int) -> dict[str, float]:
    """POST ``chats`` new chats from ``POST_CLIENTS`` threads; each chat id with the wall
    clock (ms) at which its POST was sent."""
    sent: dict[str, float] = {}
    stopping = threading.Event()

    def client(numbers: range) -> None:
        with closing(connect(base)) as connection:
            for n in numbers:
                if stopping.is_set():
                    return
                at = time.time() * 1000
                chat = api_call(
                    connection, "POST", CHATS, key, {"message_text": f"Chat {n} of the burst, please answer."}
                )
                sent[chat["id"]] = at

    shares = [range(i, chats, POST_CLIENTS) for i in range(POST_CLIENTS)]
    with ThreadPoolExecutor(POST_CLIENTS) as pool:
        try:
            list(pool.map(client, shares))
        finally:
            stopping.set()
    return sent


_REPLIES = """
    SELECT c.id, m.status, m.completed_at FROM messages m JOIN ai_chats c ON c.pk = m.chat_pk
    WHERE m.role = 'assistant' AND c.id = ANY($1::text[])
"""


async def wait_answered(url: str, chat_ids: list[str]) -> dict[str, int]:
    """Poll until every chat's reply is completed; each chat id with its reply's ``completed_at``."""
    connection = await asyncpg.connect(url)
    try:
        previous, progressed = -1, time.monotonic()
        while True:
            rows = await connection.fetch(_REPLIES, chat_ids)
            failed = [row for row in rows if row["status"] == "failed"]
            if failed:
                raise BenchError(f"{len(failed)} replies failed, e.g. in chat {failed[0]['id']}")
            done = {row["id"]: row["completed_at"] for row in rows if row["status"] == "completed"}
            if len(done) == len(chat_ids):
                return done
            if len(done) != previous:
                previous, progressed = len(done), time.monotonic()
            elif time.monotonic() - progressed > STALL_SECONDS:
                raise BenchError(f"no reply completed for {STALL_SECONDS} s ({len(chat_ids) - len(done)} left)")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await connection.close()


def burst(url: str, base: str, key: str, chats: int, probe_chat: str) -> tuple[Burst, Probe]:
    with Probe(base, key, probe_chat) as probe:
        started = time.time() * 1000
        sent = post_burst(base, key, chats)
        posted = time.time() * 1000
        completed = asyncio.run(wait_answered(url, list(sent)))
    first = min(sent.values())
    return (
        Burst(
            posted=(posted - started) / 1000,
            answered=(max(completed.values()) - first) / 1000,
            per_chat=[(completed[chat] - at) / 1000 for chat, at in sent.items()],
        ),
        probe,
    )


def idle_probe(base: str, key: str, chat_id: str) -> Probe:
    with Probe(base, key, chat_id) as probe:
        time.sleep(PROBE_SECONDS)
    return probe


# ------------------------------------------------------------------ main


def run(args: argparse.Namespace, workdir: Path) -> int:
    chats = 100 if args.quick and args.chats is None else args.chats or 500
    print(
        f"Slow model: {chats} chats posted at once to one `aichats serve` (PostgreSQL, default settings),"
        f" {MODEL} answering each after {args.delay:g} s"
    )
    extra = dict(setting.split("=", 1) for setting in args.set)
    if extra:
        print(f"  with {', '.join(f'{name}={value}' for name, value in extra.items())} (not the default settings)")
    warn_if_busy()
    model_argv = [sys.executable, str(Path(__file__).with_name("model_server.py")), "--delay", str(args.delay)]
    with server(model_argv, workdir / "model.log") as model_root:
        ceiling = asyncio.run(model_alone(model_root + "/v1", chats))
        with postgres_database(args.postgres, args.database) as url:
            key = create_key(url, workdir)
            settings = {"AICHATS_MODEL": MODEL, "OPENAI_BASE_URL": model_root + "/v1", **extra}
            with aichats_server(url, workdir, settings, log_name="serve.log") as base:
                with closing(connect(base)) as connection:  # a warm-up chat: the model's client is ready
                    warm = api_call(connection, "POST", CHATS, key, {"message_text": "Warm up, please."})
                asyncio.run(wait_answered(url, [warm["id"]]))
                idle = idle_probe(base, key, warm["id"])
                result, busy = burst(url, base, key, chats, warm["id"])

    met = result.answered <= TARGET_SECONDS
    print(
        f"  {'chats':>5} {'posted s':>9} {'all answered s':>15} {'model alone s':>14} {'vs alone':>9}"
        f" {'p50 s':>7} {'p99 s':>7} {'mean s':>7}"
    )
    print(
        f"  {chats:>5} {result.posted:>9.2f} {result.answered:>15.2f} {ceiling:>14.2f}"
        f" {result.answered / ceiling:>8.2f}x {percentile(result.per_chat, 50):>7.2f}"
        f" {percentile(result.per_chat, 99):>7.2f} {statistics.mean(result.per_chat):>7.2f}"
    )
    for label, probe in (("on the idle server", idle), (f"while the {chats} turns ran", busy)):
        print(
            f"  the API's retrieve {label}: p50 {ms(percentile(probe.latencies, 50)):.1f} ms,"
            f" p99 {ms(percentile(probe.latencies, 99)):.1f} ms ({len(probe.latencies)} calls)"
        )
    verdict = "met" if met else "NOT MET"
    print(f"  target: all {chats} answered within {TARGET_SECONDS:g} s of the first POST: {verdict}")
    return 0 if met else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Many chats at once against a slow OpenAI-compatible model.",
        epilog="See bench/README.md for what each figure means.",
    )
    parser.add_argument("--chats", type=int, help="chats posted at once (default 500; 100 with --quick)")
    parser.add_argument("--quick", action="store_true", help="100 chats instead of 500")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds the model takes (default: %(default)s)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server, e.g. AICHATS_WORKERS=4 (to compare; the target is with the defaults)",
    )
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server (default: %(default)s)")
    parser.add_argument("--database", default="aichats_bench_slow", help="PostgreSQL database it creates and drops")
    args = parser.parse_args(argv)
    if not is_loopback(args.postgres):
        parser.error("--postgres must be on a loopback address")
    if any("=" not in setting for setting in args.set):
        parser.error("--set takes NAME=VALUE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stopped = "servers stopped, database and temp files removed"
    return run_bench("slow-model", lambda workdir: run(args, workdir), stopped)


if __name__ == "__main__":
    sys.exit(main())
