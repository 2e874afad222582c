"""Load-test the AI Chats API on seeded data, against a bare ASGI baseline.

Usage (from the repository root)::

    .venv/bin/python bench/api.py [--backends sqlite,postgresql] [--duration 10]

For each backend it creates a fresh database, bulk-loads 201,000 chats (1,000 users
with 100 each, one heavy user with 100,000, one light user with 1,000), starts
``aichats serve`` on loopback (with the rate limit on, at a limit no request reaches) and
drives each call with ``wrk`` (1 thread, 32 connections); then retrieve again on two fresh
servers at the same time, one with the limit and one without: what the limit costs. A bare
ASGI app on the same server stack, answering with the bytes of a retrieve response, gives
the ceiling every figure is compared with. See ``bench/README.md`` for what each printed
figure means.

Everything it starts or creates (servers, the PostgreSQL database, temp files) is
stopped or removed before it exits. Exit status: 0 when every target is met, 1
when a target is missed or a call answered anything but 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import orjson
from common import (
    CHATS,
    DEFAULT_POSTGRES,
    BenchError,
    aichats_server,
    api_get,
    child_setup,
    is_loopback,
    postgres_database,
    run_bench,
    server,
    warn_if_busy,
)

from aichats import ids
from aichats.clock import now_ms
from aichats.services.chats import chat_json
from aichats.services.keys import KEY_PREFIX, SCOPES, hash_key
from aichats.storage import migrate

# ------------------------------------------------------------------ settings

CROWD_USERS = 1_000
CHATS_PER_CROWD_USER = 100
HEAVY_CHATS = 100_000
LIGHT_CHATS = 1_000
HISTORY_MS = 2 * 365 * 86_400_000  # chats' created_at spread over two years
DEEP_WALK_PAGES = 800  # pages of 100: the deep cursor sits 80,000 chats (page 4,001 of 20) in
WRK_THREADS = 1  # wrk and the server share two cores

CREATE_BODY = json.dumps({"message_text": "Summarise last week's sales.", "title": "Bench chat"})

# The server flags of ``aichats serve`` (src/aichats/cli.py), used for the bare app too.
SERVE_FLAGS = dict(workers=1, loop="uvloop", http="httptools", access_log=False, log_level="info", server_header=False)

TARGET_LIST_SCALING = 1.5  # heavy user's first-page p50 at most this times the light user's
# Calls' requests/s at least these shares of the bare app's, measured in turns with it.
SHARE_TARGETS = {"retrieve": 0.25, "list first page": 0.15}
SHARE_ROUNDS = 3
TARGET_CREATE_RPS = 2_000  # creates a second, at least (an absolute figure: this machine's)
# The API server runs with the rate limit on (AICHATS_RATE_LIMIT_PER_MINUTE), so high that no
# request is refused: every request still goes through it (and its reservations).
BENCH_RATE_LIMIT = 1_000_000_000
TARGET_LIMIT_OVERHEAD = 0.10  # the limit costs retrieve at most this share of its requests/s
LIMIT_ROUNDS = 7  # retrieve with and without the limit, both at once, this many rounds


# ------------------------------------------------------------------ seed data

# Column order of the rows built below; both loaders insert exactly these columns.
COLUMNS = {
    "users": ("pk", "id", "created_at"),
    "api_keys": ("pk", "id", "user_id", "key_hash", "prefix", "scopes", "created_at"),
    "ai_chats": (
        "pk", "id", "user_id", "title", "notification_preference", "agent_identifier",
        "message_count", "blended_token_usage_micros", "created_at", "updated_at",
        "last_message_at", "activity_at", "has_active_cron",
    ),
    "messages": (
        "pk", "id", "chat_pk", "role", "content", "status", "source", "attachments",
        "created_at", "completed_at",
    ),
}  # fmt: skip


@dataclass
class Dataset:
    """Rows for every table, plus what the load needs to know about them."""

    rows: dict[str, list[tuple]] = field(default_factory=dict)
    key_of: dict[str, str] = field(default_factory=dict)  # user id -> API key secret
    crowd: list[str] = field(default_factory=list)  # the 1,000 ordinary users
    heavy: str = ""
    light: str = ""
    samples: list[tuple[str, str]] = field(default_factory=list)  # (key, chat id), one per crowd user

    @property
    def chat_count(self) -> int:
        return len(self.rows["ai_chats"])


def generate_dataset(rng: random.Random) -> Dataset:
    """Users, one key each, and their chats (each with its first message), oldest first."""
    now = now_ms()
    start = now - HISTORY_MS
    data = Dataset()
    data.crowd = [ids.new_id(ids.USER) for _ in range(CROWD_USERS)]
    data.heavy, data.light = ids.new_id(ids.USER), ids.new_id(ids.USER)
    everyone = [*data.crowd, data.heavy, data.light]
    data.rows["users"] = [(pk, user, start - 86_400_000) for pk, user in enumerate(everyone, 1)]
    data.rows["api_keys"] = [_key_row(pk, user, start, data.key_of) for pk, user in enumerate(everyone, 1)]

    owners = [u for u in data.crowd for _ in range(CHATS_PER_CROWD_USER)]
    owners += [data.heavy] * HEAVY_CHATS + [data.light] * LIGHT_CHATS
    rng.shuffle(owners)
    created = sorted(rng.randrange(start, now) for _ in owners)  # pk order is creation order
    pairs = enumerate(zip(owners, created, strict=True), 1)
    data.rows["ai_chats"] = [_chat_row(pk, user, at, now, rng) for pk, (user, at) in pairs]
    data.rows["messages"] = [_message_row(chat) for chat in data.rows["ai_chats"]]
    data.samples = _one_chat_per_user(data, rng)
    return data


def _key_row(pk: int, user: str, at: int, key_of: dict[str, str]) -> tuple:
    secret = KEY_PREFIX + secrets.token_urlsafe(24)  # as services.keys.create_key makes them
    key_of[user] = secret
    return (pk, ids.new_id(ids.API_KEY), user, hash_key(secret), secret[:10], ",".join(SCOPES), at)


def _chat_row(pk: int, user: str, created: int, now: int, rng: random.Random) -> tuple:
    last_message = min(now, created + int(rng.expovariate(1 / 86_400_000)))  # ~a day of activity
    return (
        pk, ids.new_id(ids.CHAT), user, f"Chat {pk}", "all", rng.choice(("support", "general")),
        1, rng.randrange(10_000_000), created, last_message, last_message,
        max(created, last_message), rng.random() < 0.01,
    )  # fmt: skip


def _message_row(chat: tuple) -> tuple:
    """The chat's first message, sharing its pk and created_at."""
    pk, created = chat[0], chat[COLUMNS["ai_chats"].index("created_at")]
    return (pk, ids.new_id(ids.MESSAGE), pk, "user", f"Question {pk}", "completed", "manual", "[]", created, created)


def _one_chat_per_user(data: Dataset, rng: random.Random) -> list[tuple[str, str]]:
    """A random chat of every crowd user, as (its owner's key, its id), in random order."""
    chats_of: dict[str, list[str]] = {}
    for row in data.rows["ai_chats"]:
        chats_of.setdefault(row[2], []).append(row[1])
    samples = [(data.key_of[user], rng.choice(chats_of[user])) for user in data.crowd]
    rng.shuffle(samples)
    return samples


def retrieve_body(data: Dataset) -> bytes:
    """What ``GET /ai_chats/{id}`` answers for the first sampled chat, byte for byte."""
    chat_id = data.samples[0][1]
    row = next(r for r in data.rows["ai_chats"] if r[1] == chat_id)
    return orjson.dumps(chat_json(dict(zip(COLUMNS["ai_chats"], row, strict=True))))


# ------------------------------------------------------------------ databases


@contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    """A SQLite file in ``workdir`` (removed with it)."""
    yield f"sqlite:///{workdir / 'bench.db'}"


def seed_sqlite(url: str, data: Dataset) -> None:
    """All rows in one transaction. No ANALYZE: the service never runs one either."""
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        connection.execute("BEGIN")
        for table, columns in COLUMNS.items():
            marks = ", ".join("?" * len(columns))
            connection.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", data.rows[table])
        connection.execute("COMMIT")
    finally:
        connection.close()


def seed_postgresql(url: str, data: Dataset) -> None:
    """COPY every table, move the pk sequences past the rows, then VACUUM ANALYZE (the
    state autovacuum reaches on its own some time after a bulk load) and CHECKPOINT."""

    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            for table, columns in COLUMNS.items():
                await connection.copy_records_to_table(table, records=data.rows[table], columns=columns)
                await connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), (SELECT max(pk) FROM {table}))"
                )
            await connection.execute("VACUUM ANALYZE")
            await connection.execute("CHECKPOINT")  # no background flush of the load during the calls
        finally:
            await connection.close()

    asyncio.run(run())


@contextmanager
def seeded_database(backend: str, data: Dataset, workdir: Path, args: argparse.Namespace) -> Iterator[str]:
    """A migrated database of ``backend`` holding ``data``; yields its URL."""
    place = sqlite_database(workdir) if backend == "sqlite" else postgres_database(args.postgres, args.database)
    with place as url:
        migrate.upgrade(url)
        started = time.perf_counter()
        (seed_sqlite if backend == "sqlite" else seed_postgresql)(url, data)
        print(f"  seeded {data.chat_count:,} chats in {time.perf_counter() - started:.1f} s", flush=True)
        yield url


# ------------------------------------------------------------------ servers


def bare_server(body: bytes, workdir: Path) -> AbstractContextManager[str]:
    body_file = workdir / "bare-body.json"
    body_file.write_bytes(body)
    return server([sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(body_file)], workdir / "bare.log")


def bare_app(body: bytes) -> Any:
    """An ASGI app answering every request with ``body``, as Starlette would send it."""
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
    }
    end = {"type": "http.response.body", "body": body}

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})  # it was lifespan.shutdown
            return
        await send(start)
        await send(end)

    return app


def serve_bare(body_file: str, port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(Path(body_file).read_bytes()), host="127.0.0.1", port=port, **SERVE_FLAGS)


# ------------------------------------------------------------------ the API, directly


def deep_cursor(base: str, key: str) -> str:
    """The end cursor after walking ``DEEP_WALK_PAGES`` pages of 100 of ``key``'s list."""
    cursor = ""
    for _ in range(DEEP_WALK_PAGES):
        after = f"&after={cursor}" if cursor else ""
        page = api_get(base, f"{CHATS}?first=100{after}", key)
        if not page["page_info"]["has_next_page"]:
            raise BenchError("the heavy user's list ended before the deep page")
        cursor = page["page_info"]["end_cursor"]
    return cursor


# ------------------------------------------------------------------ wrk

# wrk runs this with CALLS prepended ({method, path, key, body} each), and READ_ANSWERS or
# not: it formats every call once, sends a random one per request, counts non-2xx answers
# (keeping the first for the error message) and prints one line of figures for bench/api.py
# to read. Without READ_ANSWERS it defines no response(): wrk then parses no answer's
# headers and body for Lua, and counts only the answers of status 400 or more (summary.errors.status).
READ_ANSWERS = r"""
function response(status, headers, body)
  if status < 200 or status > 299 then
    if bad == 0 then first_bad = status .. " " .. string.sub(body, 1, 200) end
    bad = bad + 1
  end
end
"""
LUA = r"""
local prepared = {}
function init(args)
  math.randomseed(os.time())
  for i, v in ipairs(CALLS) do
    local headers = {["Authorization"] = "Bearer " .. v[3]}
    if v[4] then headers["Content-Type"] = "application/json" end
    prepared[i] = wrk.format(v[1], v[2], headers, v[4])
  end
end
function request() return prepared[math.random(#prepared)] end
bad, first_bad = 0, ""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local bad_total, sample = 0, ""
  for _, t in ipairs(threads) do
    bad_total = bad_total + t:get("bad")
    if sample == "" then sample = t:get("first_bad") end
  end
  local e = summary.errors
  local non_2xx = math.max(bad_total, e.status)  -- status: wrk's own count of answers >= 400
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non_2xx": %d, ' ..
    '"socket_errors": %d, "first_bad": %q}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), non_2xx,
    e.connect + e.read + e.write + e.timeout, sample))
end
"""


class Call(NamedTuple):
    """One HTTP request, as the user holding ``key`` sends it."""

    method: str
    path: str
    key: str
    body: str | None = None  # JSON


@dataclass(frozen=True)
class Scenario:
    """One measured call: wrk sends one of ``calls``, at random, per request."""

    name: str
    calls: list[Call]


@dataclass(frozen=True)
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: run `apt-get install -y wrk`")


def lua_string(text: str) -> str:
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"not plain ASCII: {text!r}")
    return json.dumps(text)  # JSON and Lua agree on "..." with \" and \\ escapes


def write_script(scenario: Scenario, workdir: Path, name: str = "wrk.lua", read_answers: bool = True) -> Path:
    rows = ",\n".join(
        "{" + ", ".join("nil" if part is None else lua_string(part) for part in call) + "}" for call in scenario.calls
    )
    path = workdir / name
    path.write_text(f"CALLS = {{\n{rows}\n}}\n{LUA}{READ_ANSWERS if read_answers else ''}")
    return path


def start_wrk(
    base: str, script: Path, seconds: int, connections: int, cpus: set[int] | None = None
) -> subprocess.Popen:
    """wrk loading ``base``; on ``cpus`` only, if given."""
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), base]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=child_setup(cpus)
    )


def wrk_figures(process: subprocess.Popen, seconds: int) -> dict:
    stdout, stderr = process.communicate(timeout=seconds + 60)
    line = next((text for text in stdout.splitlines() if text.startswith("BENCH ")), None)
    if process.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({process.returncode}):\n{stdout}{stderr}")
    return json.loads(line.removeprefix("BENCH "))


def run_wrk(base: str, script: Path, seconds: int, connections: int) -> dict:
    return wrk_figures(start_wrk(base, script, seconds, connections), seconds)


def measure(base: str, scenario: Scenario, workdir: Path, args: argparse.Namespace) -> Result:
    """Warm up, then load ``base`` for ``args.duration`` seconds; fail on any non-2xx."""
    script = write_script(scenario, workdir)
    runs = [run_wrk(base, script, seconds, args.connections) for seconds in (args.warmup, args.duration) if seconds]
    for figures in runs:
        check_answers(scenario, figures)
    return result_of(scenario, runs[-1])


def measure_together(
    targets: list[tuple[str, Scenario]], workdir: Path, args: argparse.Namespace, wrk_cpus: set[int] | None = None
) -> list[Result]:
    """Load every ``(base, scenario)`` at the same time, each with its share of
    ``args.connections`` (one wrk each, on ``wrk_cpus`` if given), warm-up first; fail on any
    answer of status 400 or more (their scripts read no answers: wrk counts those itself)."""
    # No response() in their scripts: what wrk does per answer must not grow with its headers
    # (the limit adds three), or the two sides' clients would differ too.
    scripts = [
        write_script(scenario, workdir, f"wrk-{n}.lua", read_answers=False) for n, (_, scenario) in enumerate(targets)
    ]
    each = max(1, args.connections // len(targets))
    bases = [base for base, _ in targets]
    runs: list[dict] = []
    for seconds in (args.warmup, args.duration):
        if seconds:
            started = [
                start_wrk(base, script, seconds, each, wrk_cpus) for base, script in zip(bases, scripts, strict=True)
            ]
            runs = [wrk_figures(process, seconds) for process in started]
            for (_, scenario), figures in zip(targets, runs, strict=True):
                check_answers(scenario, figures)
    return [result_of(scenario, figures) for (_, scenario), figures in zip(targets, runs, strict=True)]


def check_answers(scenario: Scenario, figures: dict) -> None:
    if figures["non_2xx"] or figures["socket_errors"]:
        raise BenchError(
            f"{scenario.name}: {figures['non_2xx']} non-2xx responses, {figures['socket_errors']} "
            f"socket errors; first bad answer: {figures['first_bad'] or '(not read: wrk counted it)'}"
        )


def result_of(scenario: Scenario, figures: dict) -> Result:
    return Result(
        scenario.name,
        figures["requests"] / (figures["duration_us"] / 1e6),
        figures["p50_us"] / 1000,
        figures["p99_us"] / 1000,
        figures["non_2xx"],
    )


def api_scenarios(base: str, data: Dataset) -> list[Scenario]:
    """Every measured API call, in the order they run."""
    crowd_keys = [data.key_of[user] for user in data.crowd]
    heavy, light = data.key_of[data.heavy], data.key_of[data.light]
    cursor = deep_cursor(base, heavy)
    return [
        Scenario("create", [Call("POST", CHATS, key, CREATE_BODY) for key in crowd_keys]),
        Scenario("retrieve", [Call("GET", f"{CHATS}/{chat}", key) for key, chat in data.samples]),
        Scenario(
            "update",
            [
                Call("PATCH", f"{CHATS}/{chat}", key, json.dumps({"title": f"Renamed {i}"}))
                for i, (key, chat) in enumerate(data.samples)
            ],
        ),
        Scenario("list first page", [Call("GET", f"{CHATS}?first=20", key) for key in crowd_keys]),
        Scenario("list deep page", [Call("GET", f"{CHATS}?first=20&after={cursor}", heavy)]),
        Scenario("list, light user", [Call("GET", f"{CHATS}?first=20", light)]),
        Scenario("list, heavy user", [Call("GET", f"{CHATS}?first=20", heavy)]),
    ]


def bare_scenario(data: Dataset) -> Scenario:
    """The same request as a retrieve (the bare app ignores it)."""
    key, chat = data.samples[0]
    return Scenario("bare ASGI", [Call("GET", f"{CHATS}/{chat}", key)])


# ------------------------------------------------------------------ report

DESCRIPTIONS = {
    "bare ASGI": "uvicorn+httptools+uvloop, no app: the ceiling",
    "create": f"POST, {CROWD_USERS:,} users at random",
    "retrieve": f"GET by id, a chat of each of {CROWD_USERS:,} users, at random",
    "update": "PATCH title, the same chats",
    "list first page": f"first=20, {CROWD_USERS:,} users ({CHATS_PER_CROWD_USER} chats each) at random",
    "list deep page": f"heavy user, first=20 after {DEEP_WALK_PAGES * 100:,} chats",
    "list, light user": f"first=20, user with {LIGHT_CHATS:,} chats",
    "list, heavy user": f"first=20, user with {HEAVY_CHATS:,} chats",
    "retrieve, limit on": f"fresh server, limit on (never reached), with the next on one CPU: median of {LIMIT_ROUNDS}",
    "retrieve, limit off": "fresh server, AICHATS_RATE_LIMIT_PER_MINUTE=0, at the same time on the same CPU",
}


def print_header() -> None:
    print(f"  {'call':<18} {'req/s':>8} {'vs bare':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}  what")


def print_result(result: Result, bare: Result | None = None) -> None:
    ratio = f"{result.rps / bare.rps:.2f}x" if bare else ""
    print(
        f"  {result.name:<18} {result.rps:>8,.0f} {ratio:>8} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f}"
        f" {result.non_2xx:>8}  {DESCRIPTIONS.get(result.name, '')}",
        flush=True,
    )


def check_targets(results: dict[str, Result], shares: dict[str, list[float]]) -> bool:
    """Print each target and whether it is met; True when all are. The shares of the bare
    app are the medians of :func:`measure_shares`."""
    light, heavy = results["list, light user"], results["list, heavy user"]
    on, off = results["retrieve, limit on"], results["retrieve, limit off"]
    targets = [
        (
            f"the rate limit costs retrieve < {TARGET_LIMIT_OVERHEAD:.0%}",
            f"{on.rps:,.0f} / {off.rps:,.0f} req/s = {1 - on.rps / off.rps:.1%} less",
            on.rps >= (1 - TARGET_LIMIT_OVERHEAD) * off.rps,
        ),
        (
            f"list p50 at {HEAVY_CHATS:,} chats within {TARGET_LIST_SCALING}x of {LIGHT_CHATS:,}",
            f"{heavy.p50_ms:.2f} / {light.p50_ms:.2f} ms = {heavy.p50_ms / light.p50_ms:.2f}x",
            heavy.p50_ms <= TARGET_LIST_SCALING * light.p50_ms,
        ),
        *(
            (
                f"{name} >= {share:.2f}x bare req/s",
                f"median {statistics.median(shares[name]):.3f}x of {len(shares[name])} rounds",
                statistics.median(shares[name]) >= share,
            )
            for name, share in SHARE_TARGETS.items()
        ),
        (
            f"create >= {TARGET_CREATE_RPS:,} req/s",
            f"{results['create'].rps:,.0f} req/s",
            results["create"].rps >= TARGET_CREATE_RPS,
        ),
    ]
    for goal, figure, met in targets:
        print(f"  target: {goal}: {figure}: {'met' if met else 'NOT MET'}")
    return all(met for _, _, met in targets)


# ------------------------------------------------------------------ main


def bench_backend(backend: str, data: Dataset, workdir: Path, args: argparse.Namespace) -> bool:
    """Seed ``backend``, measure the bare app then every API call; True when targets are met."""
    print(f"\n{backend}", flush=True)
    with seeded_database(backend, data, workdir, args) as url:
        warn_if_busy()
        print_header()
        limited = {"AICHATS_WORKERS": "0", "AICHATS_RATE_LIMIT_PER_MINUTE": str(BENCH_RATE_LIMIT)}
        with (
            bare_server(retrieve_body(data), workdir) as bare_base,
            aichats_server(url, workdir, limited) as base,  # the API alone, no agent; the limit on
        ):
            bare = measure(bare_base, bare_scenario(data), workdir, args)
            print_result(bare)
            results = {}
            scenarios = api_scenarios(base, data)
            for scenario in scenarios:
                results[scenario.name] = measure(base, scenario, workdir, args)
                print_result(results[scenario.name], bare)
            shares = measure_shares(
                bare_base, base, data, [s for s in scenarios if s.name in SHARE_TARGETS], workdir, args
            )
        results.update(measure_limit_overhead(url, data, workdir, args))
        for name in ("retrieve, limit on", "retrieve, limit off"):
            print_result(results[name])  # both loaded at once: compared with each other
    return check_targets(results, shares)


def measure_shares(
    bare_base: str, base: str, data: Dataset, scenarios: list[Scenario], workdir: Path, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Each of ``scenarios``' req/s as a share of the bare app's measured right before it, in
    ``SHARE_ROUNDS`` rounds (bare, a call, bare, the next call...): each call's shares,
    sorted. The bare app's figure of the table above is a minute older than most calls,
    and this machine's speed drifts by tens of percent in a minute; a share of the bare
    app measured seconds before compares the same machine."""
    shares: dict[str, list[float]] = {scenario.name: [] for scenario in scenarios}
    rounds = argparse.Namespace(**{**vars(args), "warmup": 1})
    for _ in range(SHARE_ROUNDS):
        for scenario in scenarios:
            ceiling = measure(bare_base, bare_scenario(data), workdir, rounds)
            shares[scenario.name].append(measure(base, scenario, workdir, rounds).rps / ceiling.rps)
    for name, figures in shares.items():
        figures.sort()
        each = " / ".join(f"{share:.2f}x" for share in figures)
        print(f"  {name}, each right after the bare app: {each}", flush=True)
    return shares


def measure_limit_overhead(url: str, data: Dataset, workdir: Path, args: argparse.Namespace) -> dict[str, Result]:
    """Retrieve on two fresh servers on the same database, one with the limit and one
    without, both on the same CPU and loaded at the same time (half the connections each),
    ``LIMIT_ROUNDS`` times; the round whose ratio is the median.

    Loaded together on one CPU, the two share it evenly and as it is at that moment: the
    machine's speed, which drifts here by tens of percent between runs seconds apart,
    weighs on both alike, and the server whose requests cost more answers fewer. Loaded in
    turns (until the eighth session), the same code read anywhere from -4 to 17%; loaded
    together but free to move between CPUs, two identical servers read -9 to 31% apart on
    PostgreSQL, as the scheduler placed them beside its backends or wrk; together on one
    CPU, -4 to 2.5% (bench/README.md, eighth session). wrk runs on the other CPUs (since
    the ninth session), so that the servers' CPU runs nothing else of the benchmark's. Each
    gets half a CPU: these two rows compare with each other, not with the bare app."""
    calls = [Call("GET", f"{CHATS}/{chat}", key) for key, chat in data.samples]
    on = {"AICHATS_WORKERS": "0", "AICHATS_RATE_LIMIT_PER_MINUTE": str(BENCH_RATE_LIMIT)}
    off = {"AICHATS_WORKERS": "0", "AICHATS_RATE_LIMIT_PER_MINUTE": "0"}
    names = ("retrieve, limit on", "retrieve, limit off")
    cpu = {max(os.sched_getaffinity(0))}  # one of the CPUs this benchmark may use
    rounds: list[dict[str, Result]] = []
    with (
        aichats_server(url, workdir, on, log_name="aichats-limit-on.log", cpus=cpu) as limited,
        aichats_server(url, workdir, off, log_name="aichats-limit-off.log", cpus=cpu) as unlimited,
    ):
        targets = [(limited, Scenario(names[0], calls)), (unlimited, Scenario(names[1], calls))]
        for _ in range(LIMIT_ROUNDS):
            together = measure_together(targets, workdir, args, wrk_cpus=os.sched_getaffinity(0) - cpu)
            rounds.append({result.name: result for result in together})
    rounds.sort(key=lambda pair: pair[names[0]].rps / pair[names[1]].rps)
    each = " / ".join(f"{1 - pair[names[0]].rps / pair[names[1]].rps:.1%}" for pair in reversed(rounds))
    print(f"  the limit's cost in each round: {each}", flush=True)
    return rounds[len(rounds) // 2]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load-test the AI Chats API on seeded SQLite and PostgreSQL databases with wrk.",
        epilog="See bench/README.md for what each figure means.",
    )
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated (default: %(default)s)")
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per call (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default: %(default)s)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server (default: %(default)s)")
    parser.add_argument("--database", default="aichats_bench", help="PostgreSQL database to create and drop")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data's shape (default: %(default)s)")
    parser.add_argument("--serve-bare", metavar="BODY_FILE", help=argparse.SUPPRESS)  # internal: the bare server
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in args.backends:
        if backend not in ("sqlite", "postgresql"):
            parser.error(f"unknown backend {backend!r}: use sqlite and/or postgresql")
    if "postgresql" in args.backends and not is_loopback(args.postgres):
        parser.error("--postgres must be on a loopback address")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare, args.port)
        return 0
    stopped = "servers stopped, database and temp files removed"
    return run_bench("api", lambda workdir: bench_all(args, workdir), stopped)


def bench_all(args: argparse.Namespace, workdir: Path) -> int:
    require_wrk()
    started = time.perf_counter()
    data = generate_dataset(random.Random(args.seed))
    print(f"generated {data.chat_count:,} chats for {len(data.crowd) + 2:,} users "
          f"in {time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
    met = [bench_backend(backend, data, workdir, args) for backend in args.backends]
    print("\nall targets met" if all(met) else "\nsome targets NOT MET")
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
