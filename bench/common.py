"""What the benchmarks share: servers on loopback, throwaway PostgreSQL databases, API calls.

``bench/api.py`` and ``bench/agent.py`` import it as ``common`` (running
``python bench/<name>.py`` puts ``bench/`` first on the import path).
"""

from __future__ import annotations

import asyncio
import ctypes
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

CHATS = "/api/v1/ai_chats"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl


class BenchError(Exception):
    """A run that cannot give trustworthy figures: stop, clean up, exit 1."""


def run_bench(name: str, body: Callable[[Path], int | None], stopped: str) -> int:
    """Run ``body`` in a temporary directory and return the exit status.

    SIGTERM cleans up as Ctrl-C does (130); a :class:`BenchError` exits 1; ``body`` may
    return a status of its own. ``stopped`` says what was cleaned up on an interrupt.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"aichats-bench-{name}-") as tmp:
            status = body(Path(tmp)) or 0
    except BenchError as error:
        print(f"\nFAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; {stopped}", file=sys.stderr)
        return 130
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    return status


def is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in LOOPBACK


# ------------------------------------------------------------------ processes


def aichats_command(*args: str) -> list[str]:
    """argv of the ``aichats`` command installed beside this Python."""
    return [str(Path(sys.executable).with_name("aichats")), *args]


def aichats_env(settings: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any inherited ``AICHATS_*`` setting, plus ``settings``:
    what the benchmarks start sees only what they chose."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("AICHATS_")}
    return {**inherited, **(settings or {})}


def start_process(
    argv: Sequence[str], log: Path, settings: dict[str, str] | None = None, cpus: set[int] | None = None
) -> subprocess.Popen:
    """Start ``argv`` in ``log``'s directory, its output going to ``log``; on ``cpus`` only,
    if given (it and every thread it starts).

    The process gets SIGTERM if the benchmark dies before it could stop it (even by SIGKILL)."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=aichats_env(settings),
            cwd=log.parent,
            preexec_fn=child_setup(cpus),
        )


def child_setup(cpus: set[int] | None = None) -> Callable[[], None]:
    """What a process the benchmarks start runs before exec (``preexec_fn``): SIGTERM when
    the benchmark dies, and ``cpus`` only, if given (it and every thread it starts)."""

    def before_exec() -> None:
        _terminate_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return before_exec


def _terminate_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent exits."""
    if _prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def stop(*processes: subprocess.Popen) -> None:
    """Terminate every process, then wait for each (killing it after 15 s): an interruption
    while one of them shuts down leaves none of them running."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


# ------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server(
    argv: Sequence[str], log: Path, settings: dict[str, str] | None = None, cpus: set[int] | None = None
) -> Iterator[str]:
    """Run a server process (given ``--port`` last); yields its base URL once it listens."""
    port = free_port()
    process = start_process([*argv, "--port", str(port)], log, settings, cpus)
    try:
        wait_until_listening(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def wait_until_listening(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"server exited with {process.returncode}:\n{log_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"server not listening on port {port} after {timeout:.0f} s")


# Benchmarks drive the API with one key far past the default rate limit (600 requests a
# minute per operation): the limit stays on, its cost in every figure, but is never reached.
NEVER_REACHED_RATE_LIMIT = "1000000000"


def aichats_server(
    url: str,
    workdir: Path,
    settings: dict[str, str] | None = None,
    log_name: str = "aichats.log",
    cpus: set[int] | None = None,
) -> AbstractContextManager[str]:
    """``aichats serve`` on loopback against ``url``, with ``settings`` (AICHATS_* variables;
    the rate limit, unless they set it, at :data:`NEVER_REACHED_RATE_LIMIT`), on ``cpus``
    only if given."""
    argv = aichats_command("serve", "--host", "127.0.0.1")
    env = {"AICHATS_DATABASE_URL": url, "AICHATS_RATE_LIMIT_PER_MINUTE": NEVER_REACHED_RATE_LIMIT, **(settings or {})}
    return server(argv, workdir / log_name, env, cpus)


# ------------------------------------------------------------------ PostgreSQL


@contextmanager
def postgres_database(server_url: str, name: str) -> Iterator[str]:
    """A fresh PostgreSQL database, dropped on the way out."""
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    postgres_admin(server_url, drop, f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url}/{name}"
    finally:
        postgres_admin(server_url, drop)


def postgres_admin(server_url: str, *statements: str) -> None:
    """Run ``statements`` in the server's ``postgres`` database."""
    postgres_execute(f"{server_url}/postgres", *statements)


def postgres_execute(url: str, *statements: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


# ------------------------------------------------------------------ the API, directly


def connect(base: str, timeout: float = 30) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(urlsplit(base).netloc, timeout=timeout)


def api_call(connection: http.client.HTTPConnection, method: str, path: str, key: str, body: dict | None = None) -> Any:
    """One authenticated request on ``connection``; its JSON, or BenchError if not 2xx."""
    headers = {"Authorization": f"Bearer {key}"}
    payload = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        payload = json.dumps(body)
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    data = response.read()
    if not 200 <= response.status < 300:
        raise BenchError(f"{method} {path} answered {response.status}: {data[:300]!r}")
    return json.loads(data)


def api_get(base: str, path: str, key: str) -> Any:
    """One authenticated GET on a new connection."""
    with closing(connect(base)) as connection:
        return api_call(connection, "GET", path, key)


# ------------------------------------------------------------------ events, keys, figures


def open_events(
    connection: http.client.HTTPConnection, key: str, chat_id: str, after: str | None = None
) -> http.client.HTTPResponse:
    """``GET .../events``: every event of the chat, replayed, then live; with ``after`` (its
    ``Last-Event-ID``: an event id, or ``latest``), only those after it."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    if after is not None:
        headers["Last-Event-ID"] = after
    connection.request("GET", f"{CHATS}/{chat_id}/events", headers=headers)
    response = connection.getresponse()
    if response.status != 200:
        raise BenchError(f"the event stream answered {response.status}: {response.read(300)!r}")
    return response


def sse_events(response: http.client.HTTPResponse) -> Iterator[tuple[str, str]]:
    """(event, data) of each server-sent event, as soon as its closing blank line arrives."""
    event, data = "message", []
    while line := response.readline():
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif not line.startswith(b":"):  # ":" starts a comment (keep-alive pings)
            name, _, value = line.decode().partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def create_key(url: str, workdir: Path) -> str:
    """A new user's API key, made with the CLI (which migrates the database first)."""
    user = run_cli(url, workdir, "users", "create")
    return run_cli(url, workdir, "keys", "create", "--user", user)


def run_cli(url: str, workdir: Path, *args: str) -> str:
    """Run ``aichats ARGS`` against ``url``; the last line it printed."""
    done = subprocess.run(
        aichats_command(*args),
        capture_output=True,
        text=True,
        cwd=workdir,
        env=aichats_env({"AICHATS_DATABASE_URL": url}),
        timeout=120,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"aichats {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> float:
    return seconds * 1000


# ------------------------------------------------------------------ the machine


def warn_if_busy(threshold: float = 0.15) -> None:
    """Other work on the machine skews every figure: say so when the CPUs are not idle."""

    def sample() -> tuple[int, int]:  # (idle, total) jiffies over all CPUs
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    idle, total = sample()
    time.sleep(1)
    idle_after, total_after = sample()
    busy = 1 - (idle_after - idle) / max(1, total_after - total)
    if busy > threshold:
        print(f"  warning: the machine was {busy:.0%} busy before this run; figures will be noisy", flush=True)
