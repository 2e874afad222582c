"""Servers for tests: real ``aichats`` processes, and the app called in this process.

A real process (``start_server``, ``serving``) is for what needs real HTTP: streams, the
published clients, a browser, killed processes. A test whose calls all answer at once
can use ``AppServer``: the app in this process behind ``httpx2.ASGITransport``, started
in a few milliseconds, on a database of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx2
import uvicorn

from aichats.config import Settings
from tests.support.accounts import Account, make_account
from tests.support.waiting import wait_for

AICHATS = str(Path(sys.executable).with_name("aichats"))
ANSWER_SECONDS = 30  # the longest an in-process call may take (``AppServer``)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(database_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``aichats`` command against ``database_url``."""
    env = {**os.environ, "AICHATS_DATABASE_URL": database_url}
    result = subprocess.run([AICHATS, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"aichats {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


class Server:
    """What API tests need of a server, real or in-process: its address, accounts on its
    database, clients of its API, and the CLI on its database."""

    root: str
    database_url: str

    @property
    def api(self) -> str:
        return self.root + "/api/v1"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.database_url, *args, check=check)

    def account(self, scopes: str | None = None) -> Account:
        """A new user with a new key (all scopes unless ``scopes`` is given)."""
        return make_account(self.database_url, scopes)

    def client(self, account: Account | None = None) -> httpx2.Client:
        """A client of the API, with ``account``'s key (none without it)."""
        headers = account.headers if account else {}
        return httpx2.Client(base_url=self.api, headers=headers, timeout=10, transport=self.transport())

    def transport(self) -> httpx2.BaseTransport | None:
        """How clients reach the server: None for a socket."""
        return None


# ----------------------------------------------------------------------- real processes


@dataclass
class LiveServer(Server):
    """An ``aichats serve`` process on a free port."""

    root: str
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None


def start_server(database_url: str, log_path: Path, extra_env: dict[str, str] | None = None) -> LiveServer:
    """``aichats serve`` on ``database_url``, once ``/healthz`` answers (its output in ``log_path``)."""
    port = free_port()
    env = {**os.environ, "AICHATS_DATABASE_URL": database_url, **(extra_env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [AICHATS, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"aichats serve exited early:\n{log_path.read_text()}")
        try:
            if httpx2.get(root + "/healthz", timeout=1).status_code == 200:
                return LiveServer(root, database_url, process, log_path)
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"aichats serve did not become healthy:\n{log_path.read_text()}")


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it has not ended within 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def stop_server(server: LiveServer) -> None:
    terminate(server.process)


@contextmanager
def serving(database_url: str, directory: Path, env: dict[str, str]) -> Iterator[LiveServer]:
    """``aichats serve`` with ``env`` (files under ``directory``); stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    server = start_server(database_url, directory / "serve.log", {"AICHATS_FILES_DIR": str(directory / "files"), **env})
    try:
        yield server
    finally:
        stop_server(server)


def log_of(server: LiveServer) -> str:
    """The end of the server's output, for a failure's message."""
    path = server.log_path
    return path.read_text(errors="replace")[-4000:] if path and path.exists() else ""


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no cleanup, the run's lease simply stops being renewed."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        terminate(self.process)


def launch_worker(database_url: str, log_path: Path, env: dict[str, str], *args: str) -> WorkerProcess:
    """Start ``aichats worker`` (``args`` e.g. ``--concurrency 2``) without waiting for it."""
    full = {**os.environ, **env, "AICHATS_DATABASE_URL": database_url}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([AICHATS, "worker", *args], env=full, stdout=log, stderr=subprocess.STDOUT)
    return WorkerProcess(process, log_path)


def wait_started(worker: WorkerProcess, timeout: float = 30) -> WorkerProcess:
    """Wait until the worker says it runs (its LISTEN is then in place)."""

    def started() -> bool:
        if worker.process.poll() is not None:
            raise AssertionError(f"aichats worker exited:\n{worker.log()}")
        return "aichats worker:" in worker.log_path.read_text(errors="replace")

    try:
        wait_for(started, timeout, "aichats worker to start")
    except AssertionError:
        worker.stop()
        raise AssertionError(f"aichats worker did not start:\n{worker.log()}") from None
    return worker


# ----------------------------------------------------------------------- in this process


@contextmanager
def uvicorn_server(settings: Settings) -> Iterator[str]:
    """The app on a real uvicorn server, in a thread of this process: real HTTP, and the
    app's in-process state (counters) readable by the test. Yields the API's root URL."""
    from aichats.api.app import create_app  # here: every test imports this module, few need the app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the in-process server to start")
        yield f"http://127.0.0.1:{server.config.port}/api/v1"
    finally:
        server.should_exit = True
        thread.join(15)


class _PortalTransport(httpx2.BaseTransport):
    """A synchronous transport onto ``httpx2.ASGITransport``, whose calls run on the portal's
    event loop (the one the app's lifespan started on). Each answer is read whole, so this
    is for calls that end: a stream fails with a ``ReadTimeout`` after ``ANSWER_SECONDS``."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, app: Any) -> None:
        self.portal = portal
        # Like a real server: an unexpected error is a 500 for the client, not raised in the test.
        self.asgi = httpx2.ASGITransport(app, raise_app_exceptions=False)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return self.portal.call(self._send, request.method, str(request.url), request.headers, request.read())
        except TimeoutError:
            raise httpx2.ReadTimeout(f"no whole answer within {ANSWER_SECONDS} s", request=request) from None

    async def _send(self, method: str, url: str, headers: httpx2.Headers, body: bytes) -> httpx2.Response:
        with anyio.fail_after(ANSWER_SECONDS):  # a stream started by mistake fails the test, not hangs it
            response = await self.asgi.handle_async_request(httpx2.Request(method, url, headers=headers, content=body))
            try:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        return httpx2.Response(response.status_code, headers=response.headers, stream=httpx2.ByteStream(raw))


class AppServer(Server):
    """The app in this process, lifespan run, called through ``httpx2.ASGITransport``.

    No socket and no process: it starts in milliseconds, so each test can have its own (on
    its own database). It runs no workers unless ``settings`` give some. Use it as a context manager.
    """

    root = "http://aichats.test"

    def __init__(self, database_url: str, files_dir: Path, **settings: Any) -> None:
        self.database_url = database_url
        self.settings = Settings(database_url=database_url, files_dir=str(files_dir), **{"workers": 0, **settings})
        self._stack = ExitStack()

    def __enter__(self) -> AppServer:
        with ExitStack() as stack:
            self.portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
            from aichats.api.app import create_app  # here: every test imports this module, few need the app

            self.app = create_app(self.settings)
            stack.enter_context(self.portal.wrap_async_context_manager(self.app.router.lifespan_context(self.app)))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def transport(self) -> httpx2.BaseTransport:
        return _PortalTransport(self.portal, self.app)
