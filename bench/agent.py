"""Benchmark the agent: time to first token, server overhead per token, runs per second.

Usage (from the repository root)::

    .venv/bin/python bench/agent.py [--quick]

1. **Time to first token** (SQLite, ``aichats serve`` with its one in-process worker):
   chats one at a time; each POSTs a new chat, then at once opens its event stream
   from the start, and times the first ``message.delta`` and the ``message.completed``
   from the moment the POST was sent. With the real ``local:smollm2-135m`` (replies
   of at most 32 tokens) and with ``test:echo-200``.
2. **Server overhead per token** (the same, ``test:echo-2000``): the test model takes
   no time, so (last token - first token) / tokens is what the server spends a token.
3. **Chats at once** (SQLite, ``aichats serve`` on its default settings): four long replies
   of the local model, each alone and then all four at once; then the same on the local
   provider in this process, with nothing of aichats around the engine: the ceiling.
4. **Runs per second** (PostgreSQL, ``aichats serve`` with no workers): 2,000 turns
   queued through the API, then 1, 2 and 4 ``aichats worker`` processes, each with its
   default settings (up to ``AICHATS_WORKERS`` turns in flight), complete them with
   ``test:echo``.

See ``bench/README.md`` for what each figure means. Everything it starts or creates
(servers, workers, the PostgreSQL database, temp files) is stopped or removed before
it exits, on Ctrl-C too. Exit status: 0 when every turn completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from common import (
    CHATS,
    DEFAULT_POSTGRES,
    BenchError,
    aichats_command,
    aichats_server,
    api_call,
    connect,
    create_key,
    is_loopback,
    log_tail,
    ms,
    open_events,
    percentile,
    postgres_database,
    postgres_execute,
    run_bench,
    sse_events,
    start_process,
    stop,
    warn_if_busy,
)

from aichats.agent.models import ChatMessage
from aichats.agent.models.local import LocalModel
from aichats.config import Settings

# ------------------------------------------------------------------ settings

PROMPT = "In one sentence, what is a rainbow?"
LOCAL_MODEL = "local:smollm2-135m"
LOCAL_MAX_TOKENS = 32
ECHO_WORDS = 200  # test:echo-200 in the time-to-first-token table
OVERHEAD_WORDS = 2000  # test:echo-2000 for the per-token overhead
QUEUE_MODEL = "test:echo"  # "You said: <message>", a handful of words
QUEUE_CLIENTS = 8  # threads POSTing the queued turns
WORKER_PROCESSES = (1, 2, 4)  # each with its default settings (AICHATS_WORKERS turns in flight)
TURN_SECONDS = 300  # one turn longer than this fails the run
STALL_SECONDS = 60  # no run completing for this long fails the run
POLL_SECONDS = 0.05  # how often the runs table is counted while workers drain it
PARTS = ("latency", "overhead", "parallel", "throughput")
# Part 4: long replies of the local model, alone and four at once, on the default settings.
PARALLEL_CHATS = 4
PARALLEL_MAX_TOKENS = 200
PARALLEL_PROMPTS = tuple(
    f"Write a long story, in many paragraphs, about a lighthouse keeper named {name}."
    for name in ("Ada", "Brahim", "Chen", "Dagny")
)


@dataclass(frozen=True)
class Sizes:
    local_chats: int
    echo_chats: int
    overhead_chats: int
    runs: int


FULL = Sizes(local_chats=8, echo_chats=20, overhead_chats=10, runs=2000)
QUICK = Sizes(local_chats=3, echo_chats=5, overhead_chats=3, runs=300)


# ------------------------------------------------------------------ one timed turn


@dataclass(frozen=True)
class Turn:
    """One agent turn as its client saw it, in seconds from sending the POST."""

    answered: float  # the POST's answer arrived (chat stored, turn queued)
    first_token: float  # the first message.delta arrived
    last_token: float  # message.completed arrived
    tokens: int  # output tokens, as message.completed reports them
    deltas: int  # message.delta events (the worker coalesces tokens into ~50 ms batches)

    @property
    def streaming(self) -> float:
        return self.last_token - self.first_token


def timed_turn(base: str, key: str, text: str) -> Turn:
    """POST a new chat, then open its event stream from the start and time its reply."""
    deadline = time.monotonic() + TURN_SECONDS
    with closing(connect(base, timeout=TURN_SECONDS)) as connection:
        sent = time.perf_counter()
        chat = api_call(connection, "POST", CHATS, key, {"message_text": text})
        answered = time.perf_counter() - sent
        return _timed_reply(sse_events(open_events(connection, key, chat["id"])), sent, answered, deadline)


def live_turn(base: str, key: str, text: str) -> Turn:
    """A turn timed on an event stream opened before its message is sent: a chat is made
    (its first turn run out, untimed), then a second message is timed, live. A reply of
    the instant test model can end before a stream opened after the POST replays it, and
    then it has no deltas left to replay (its completion replaces them)."""
    deadline = time.monotonic() + TURN_SECONDS
    with (
        closing(connect(base, timeout=TURN_SECONDS)) as posting,
        closing(connect(base, timeout=TURN_SECONDS)) as first,
        closing(connect(base, timeout=TURN_SECONDS)) as listening,
    ):
        chat = api_call(posting, "POST", CHATS, key, {"message_text": text})
        for event, _ in sse_events(open_events(first, key, chat["id"])):
            if event in ("message.completed", "message.failed"):
                break
        stream = sse_events(open_events(listening, key, chat["id"], after="latest"))
        sent = time.perf_counter()
        api_call(posting, "POST", f"{CHATS}/{chat['id']}/messages", key, {"message_text": text})
        return _timed_reply(stream, sent, time.perf_counter() - sent, deadline)


def _timed_reply(stream: Iterator[tuple[str, str]], sent: float, answered: float, deadline: float) -> Turn:
    """Read ``stream`` until the reply completes; its times in seconds from ``sent``."""
    first, deltas = None, 0
    for event, data in stream:
        at = time.perf_counter() - sent
        if event == "message.delta":
            first = at if first is None else first
            deltas += 1
        elif event == "message.failed":
            raise BenchError(f"the turn failed: {json.loads(data)['error']}")
        elif event == "message.completed":
            # A reply that ended before the stream opened has no deltas left to replay
            # (its completion replaces them): its first token arrived with it.
            first = at if first is None else first
            return Turn(answered, first, at, json.loads(data)["usage"]["output_tokens"], deltas)
        if time.monotonic() > deadline:
            raise BenchError(f"a turn took over {TURN_SECONDS} s")
    raise BenchError("the event stream ended before message.completed")


def timed_turns(
    url: str,
    key: str,
    workdir: Path,
    model: str,
    max_tokens: int,
    chats: int,
    turn: Callable[[str, str, str], Turn] = timed_turn,
) -> tuple[Turn, list[Turn]]:
    """A server with ``model`` and one in-process worker: one cold turn, then ``chats`` measured."""
    settings = {"AICHATS_MODEL": model, "AICHATS_MAX_OUTPUT_TOKENS": str(max_tokens), "AICHATS_WORKERS": "1"}
    with aichats_server(url, workdir, settings, log_name=f"serve-{model.replace(':', '-')}.log") as base:
        cold = turn(base, key, PROMPT)  # loads the model, warms caches
        return cold, [turn(base, key, PROMPT) for _ in range(chats)]


# ------------------------------------------------------------------ 1. time to first token


def bench_latency(url: str, key: str, workdir: Path, sizes: Sizes) -> None:
    print("\n1. Time to first token: SQLite, `aichats serve` with 1 in-process worker, one chat at a time")
    print("   (ms from sending the POST; the p99 of under 100 chats is the slowest)", flush=True)
    warn_if_busy()
    print(
        f"  {'model':<20} {'chats':>5} {'tokens':>6} {'POST p50':>9} {'first p50':>10} {'first p99':>10}"
        f" {'last p50':>9} {'last p99':>9} {'cold first':>11}"
    )
    for model, max_tokens, chats in (
        (LOCAL_MODEL, LOCAL_MAX_TOKENS, sizes.local_chats),
        (f"test:echo-{ECHO_WORDS}", ECHO_WORDS, sizes.echo_chats),
    ):
        cold, turns = timed_turns(url, key, workdir, model, max_tokens, chats)
        first, last = [t.first_token for t in turns], [t.last_token for t in turns]
        print(
            f"  {model:<20} {chats:>5} {statistics.median(t.tokens for t in turns):>6.0f}"
            f" {ms(statistics.median(t.answered for t in turns)):>9.1f}"
            f" {ms(percentile(first, 50)):>10.1f} {ms(percentile(first, 99)):>10.1f}"
            f" {ms(percentile(last, 50)):>9.1f} {ms(percentile(last, 99)):>9.1f} {ms(cold.first_token):>11.1f}",
            flush=True,
        )


# ------------------------------------------------------------------ 2. overhead per token


def bench_overhead(url: str, key: str, workdir: Path, sizes: Sizes) -> None:
    model = f"test:echo-{OVERHEAD_WORDS}"
    print(f"\n2. Server overhead per streamed token: {model} on SQLite, 1 in-process worker, one chat at a time")
    print("   (the test model takes ~0 s a token: (last token - first token) / tokens is the server's cost)")
    warn_if_busy()
    _, turns = timed_turns(url, key, workdir, model, OVERHEAD_WORDS, sizes.overhead_chats, live_turn)
    if any(t.tokens != OVERHEAD_WORDS for t in turns):
        raise BenchError(f"{model} streamed {sorted({t.tokens for t in turns})} tokens, not {OVERHEAD_WORDS}")
    if any(t.deltas == 0 for t in turns):
        raise BenchError(f"a reply of {model} streamed no delta, even to a stream opened before it began")
    per_token = [t.streaming / t.tokens * 1e6 for t in turns]
    print(
        f"  {'chats':>5} {'tokens':>6} {'first->last p50 ms':>19} {'per token p50 µs':>17} {'p99 µs':>7}"
        f" {'tokens/s p50':>13} {'delta events p50':>17}"
    )
    print(
        f"  {len(turns):>5} {OVERHEAD_WORDS:>6} {ms(statistics.median(t.streaming for t in turns)):>19.1f}"
        f" {percentile(per_token, 50):>17.1f} {percentile(per_token, 99):>7.1f}"
        f" {1e6 / percentile(per_token, 50):>13,.0f} {statistics.median(t.deltas for t in turns):>17.0f}",
        flush=True,
    )


# ------------------------------------------------------------------ 3. chats at once


def bench_parallel(url: str, key: str, workdir: Path) -> None:
    print(
        f"\n3. Chats at once: {LOCAL_MODEL} on SQLite, `aichats serve` with its default settings, "
        f"replies of up to {PARALLEL_MAX_TOKENS} tokens"
    )
    print(f"   (each of {PARALLEL_CHATS} prompts alone, one after another; then all {PARALLEL_CHATS} posted at once)")
    warn_if_busy()
    settings = {"AICHATS_MAX_OUTPUT_TOKENS": str(PARALLEL_MAX_TOKENS)}
    with aichats_server(url, workdir, settings, log_name="serve-parallel.log") as base:
        timed_turn(base, key, PROMPT)  # the engine is loaded and warm
        served = alone_and_together(lambda prompt: timed_turn(base, key, prompt))
    ceiling = asyncio.run(engine_alone_and_together())
    print(
        f"  {'layout':<42} {'tokens':>7} {'first p50 ms':>13} {'reply s (mean)':>15} {'all done s':>11}"
        f" {'tokens/s':>9} {'vs alone':>9}"
    )
    for label, (alone, together, wall) in (("aichats", served), ("engine alone (ceiling)", ceiling)):
        alone_mean = statistics.mean(t.last_token for t in alone)
        alone_tokens = sum(t.tokens for t in alone)
        print(
            f"  {f'{label}, 1 chat at a time':<42} {alone_tokens:>7}"
            f" {ms(statistics.median(t.first_token for t in alone)):>13.0f}"
            f" {alone_mean:>15.2f} {sum(t.last_token for t in alone):>11.2f}"
            f" {alone_tokens / sum(t.last_token for t in alone):>9.1f} {1:>8.2f}x"
        )
        together_tokens = sum(t.tokens for t in together)
        print(
            f"  {f'{label}, {PARALLEL_CHATS} at once':<42} {together_tokens:>7}"
            f" {ms(statistics.median(t.first_token for t in together)):>13.0f}"
            f" {statistics.mean(t.last_token for t in together):>15.2f} {wall:>11.2f}"
            f" {together_tokens / wall:>9.1f} {wall / alone_mean:>8.2f}x",
            flush=True,
        )
    ratio = served[2] / statistics.mean(t.last_token for t in served[0])
    ceiling_ratio = ceiling[2] / statistics.mean(t.last_token for t in ceiling[0])
    print(
        f"  {PARALLEL_CHATS} at once took {ratio:.2f}x one alone through aichats, {ceiling_ratio:.2f}x on the engine"
        f" alone (fully serial: about {PARALLEL_CHATS}x; target: at most 2.5x): {'met' if ratio <= 2.5 else 'NOT MET'}"
    )


def alone_and_together(turn: Callable[[str], Turn]) -> tuple[list[Turn], list[Turn], float]:
    """Each prompt alone, one after another; then all of them at once (with the wall time)."""
    alone = [turn(prompt) for prompt in PARALLEL_PROMPTS]
    started = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL_CHATS) as pool:
        together = list(pool.map(turn, PARALLEL_PROMPTS))
    return alone, together, time.perf_counter() - started


async def engine_alone_and_together() -> tuple[list[Turn], list[Turn], float]:
    """The same prompts on the local provider itself, in this process: the engine with its
    default settings and nothing of aichats around it (no database, worker or event stream)."""
    model = LocalModel(LOCAL_MODEL.removeprefix("local:"), Settings())
    loop = asyncio.get_running_loop()

    async def turn(prompt: str) -> Turn:
        sent = loop.time()
        first, tokens, deltas = None, 0, 0
        async for item in model.stream([ChatMessage("user", prompt)], max_output_tokens=PARALLEL_MAX_TOKENS):
            if isinstance(item, str):
                first = loop.time() - sent if first is None else first
                deltas += 1
            else:
                tokens = item.output_tokens
        if first is None:
            raise BenchError("the engine's reply had no token")
        return Turn(0.0, first, loop.time() - sent, tokens, deltas)

    try:
        await turn(PROMPT)  # the engine is loaded and warm
        alone = [await turn(prompt) for prompt in PARALLEL_PROMPTS]
        started = loop.time()
        together = await asyncio.gather(*(turn(prompt) for prompt in PARALLEL_PROMPTS))
        return alone, list(together), loop.time() - started
    finally:
        await model.close()


# ------------------------------------------------------------------ 4. runs per second


def bench_throughput(args: argparse.Namespace, sizes: Sizes, workdir: Path) -> None:
    print(f"\n4. Runs completed per second: PostgreSQL, {QUEUE_MODEL}, {sizes.runs:,} turns queued through the API")
    print(
        "   (`aichats serve` with AICHATS_WORKERS=0 queues them; then `aichats worker` processes,"
        " on their default settings, run them)"
    )
    warn_if_busy()
    with postgres_database(args.postgres, args.database) as url:
        key = create_key(url, workdir)
        settings = {"AICHATS_WORKERS": "0", "AICHATS_MODEL": QUEUE_MODEL}
        with aichats_server(url, workdir, settings, log_name="serve-api.log") as base:
            print(f"  {'worker processes':>16} {'queue s':>8} {'drain s':>8} {'runs/s':>8} {'vs 1':>6}")
            alone = None
            for processes in WORKER_PROCESSES:
                queued = queue_turns(url, base, key, sizes.runs)
                seconds = asyncio.run(drain(url, processes, sizes.runs, workdir))
                alone = alone or seconds
                print(
                    f"  {processes:>16} {queued:>8.1f} {seconds:>8.2f} {sizes.runs / seconds:>8,.0f}"
                    f" {alone / seconds:>5.2f}x",
                    flush=True,
                )


def queue_turns(url: str, base: str, key: str, total: int) -> float:
    """Empty the chat tables, POST ``total`` new chats (queued turns); seconds the POSTs took.

    Then ANALYZE and CHECKPOINT, so every layout starts from the same state."""
    postgres_execute(url, "TRUNCATE ai_chats, messages, runs, chat_events CASCADE")
    started = time.perf_counter()
    post_chats(base, key, total)
    seconds = time.perf_counter() - started
    postgres_execute(url, "ANALYZE", "CHECKPOINT")
    return seconds


def post_chats(base: str, key: str, total: int) -> None:
    """``total`` POSTs from ``QUEUE_CLIENTS`` threads, each on its own keep-alive connection."""
    stopping = threading.Event()

    def client(count: int) -> None:
        with closing(connect(base)) as connection:
            for n in range(count):
                if stopping.is_set():
                    return
                api_call(connection, "POST", CHATS, key, {"message_text": f"Queued turn {n}, please answer."})

    shares = [total // QUEUE_CLIENTS + (i < total % QUEUE_CLIENTS) for i in range(QUEUE_CLIENTS)]
    with ThreadPoolExecutor(QUEUE_CLIENTS) as pool:
        try:
            list(pool.map(client, shares))
        finally:
            stopping.set()  # on failure or Ctrl-C the other clients stop at their next POST


async def drain(url: str, processes: int, total: int, workdir: Path) -> float:
    """Seconds for ``processes`` worker processes to complete ``total`` queued runs.

    The runs table stays locked while the processes start, so that none gets a head
    start: the clock starts when the lock is released, once every process is ready."""
    connection = await asyncpg.connect(url)
    workers: list[tuple[subprocess.Popen, Path]] = []
    try:
        queued = await connection.fetchval("SELECT count(*) FROM runs WHERE status = 'queued'")
        if queued != total:
            raise BenchError(f"{queued} runs queued, not {total}")
        hold = connection.transaction()
        await hold.start()
        await connection.execute("LOCK TABLE runs IN EXCLUSIVE MODE")  # claims wait; plain reads do not
        for n in range(processes):
            workers.append(start_worker(url, workdir / f"worker-{processes}-{n}.log"))
        await wait_ready(workers)
        started = time.perf_counter()
        await hold.commit()
        await wait_completed(connection, workers)
        return time.perf_counter() - started
    finally:
        await connection.close()  # releases the lock first, so no worker is stuck on it
        stop(*(process for process, _ in workers))


def start_worker(url: str, log: Path) -> tuple[subprocess.Popen, Path]:
    settings = {"AICHATS_DATABASE_URL": url, "AICHATS_MODEL": QUEUE_MODEL}
    return start_process(aichats_command("worker"), log, settings), log


async def wait_ready(workers: list[tuple[subprocess.Popen, Path]], timeout: float = 60) -> None:
    """Until every worker has printed ``aichats worker: up to N turns at once on ...`` (it runs)."""
    deadline = time.monotonic() + timeout
    while not all("aichats worker:" in log.read_text(errors="replace") for _, log in workers):
        check_alive(workers)
        if time.monotonic() > deadline:
            raise BenchError(f"workers not ready after {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def wait_completed(connection: asyncpg.Connection, workers: list[tuple[subprocess.Popen, Path]]) -> None:
    """Poll the runs table until every run is ``completed``; fail on a failed run or a stall."""
    previous, progressed = -1, time.monotonic()
    while True:
        remaining, failed = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE status <> 'completed'),"
            " count(*) FILTER (WHERE status IN ('failed', 'cancelled')) FROM runs"
        )
        if failed:
            error = await connection.fetchval("SELECT error FROM runs WHERE status IN ('failed', 'cancelled') LIMIT 1")
            raise BenchError(f"{failed} runs failed or were cancelled, the first with: {error}")
        if remaining == 0:
            return
        check_alive(workers)
        if remaining != previous:
            previous, progressed = remaining, time.monotonic()
        elif time.monotonic() - progressed > STALL_SECONDS:
            raise BenchError(f"no run completed for {STALL_SECONDS} s ({remaining} left)")
        await asyncio.sleep(POLL_SECONDS)


def check_alive(workers: list[tuple[subprocess.Popen, Path]]) -> None:
    for process, log in workers:
        if process.poll() is not None:
            raise BenchError(f"a worker exited with {process.returncode}:\n{log_tail(log)}")


# ------------------------------------------------------------------ helpers


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the agent: time to first token, overhead per streamed token, runs per second.",
        epilog="See bench/README.md for what each figure means.",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"fewer chats and {QUICK.runs:,} queued runs instead of {FULL.runs:,}"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server (default: %(default)s)")
    parser.add_argument("--database", default="aichats_bench_agent", help="PostgreSQL database it creates and drops")
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    for part in args.parts:
        if part not in PARTS:
            parser.error(f"unknown part {part!r}: use {', '.join(PARTS)}")
    if "throughput" in args.parts and not is_loopback(args.postgres):
        parser.error("--postgres must be on a loopback address")
    return args


def run(args: argparse.Namespace, workdir: Path) -> None:
    sizes = QUICK if args.quick else FULL
    if "latency" in args.parts or "overhead" in args.parts or "parallel" in args.parts:
        url = f"sqlite:///{workdir / 'agent.db'}"
        key = create_key(url, workdir)
        if "latency" in args.parts:
            bench_latency(url, key, workdir, sizes)
        if "overhead" in args.parts:
            bench_overhead(url, key, workdir, sizes)
        if "parallel" in args.parts:
            bench_parallel(url, key, workdir)
    if "throughput" in args.parts:
        bench_throughput(args, sizes, workdir)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stopped = "servers and workers stopped, database and temp files removed"
    return run_bench("agent", lambda workdir: run(args, workdir), stopped)


if __name__ == "__main__":
    sys.exit(main())
