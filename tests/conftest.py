"""Fixtures shared by every test: the two databases and a real server process.

Every test that touches the database runs twice, on SQLite and on PostgreSQL
(127.0.0.1:5432, or ``AICHATS_TEST_POSTGRES_URL``). Each test session gets fresh
databases; tests stay independent by creating their own users, since all data is
scoped to its user. Without PostgreSQL the PostgreSQL half is skipped, except under
``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from aichats.services import keys, users
from aichats.storage import database, migrate

POSTGRES_ADMIN_URL = os.environ.get("AICHATS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]
AICHATS = str(Path(sys.executable).with_name("aichats"))


def _postgres_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def _postgres_database(name: str) -> str:
    try:
        _postgres_admin(f'CREATE DATABASE "{name}"')
    except (TimeoutError, OSError) as error:
        message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database of each kind, for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'aichats.db'}"
        migrate.upgrade(url)
        yield url
        return
    name = f"aichats_test_{os.getpid()}_{secrets.token_hex(3)}"
    url = _postgres_database(name)
    migrate.upgrade(url)
    yield url
    _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(database_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``aichats`` command against ``database_url``."""
    env = {**os.environ, "AICHATS_DATABASE_URL": database_url}
    result = subprocess.run([AICHATS, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"aichats {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@dataclass
class Account:
    user_id: str
    key: str
    file_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_account(database_url: str, scopes: str | None = None) -> Account:
    """A new user and key, made with the services (the CLI's own tests use the CLI)."""

    async def run() -> Account:
        db = await database.connect(database_url, pool_size=1)
        try:
            user_id = await users.create_user(db)
            _, secret = await keys.create_key(db, user_id, keys.parse_scopes(scopes))
            return Account(user_id, secret)
        finally:
            await db.close()

    return asyncio.run(run())


@dataclass
class LiveServer:
    """An ``aichats serve`` process on a free port."""

    root: str
    database_url: str
    process: subprocess.Popen[bytes]

    @property
    def api(self) -> str:
        return self.root + "/api/v1"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.database_url, *args, check=check)

    def account(self, scopes: str | None = None) -> Account:
        """A new user with a new key (all scopes unless ``scopes`` is given)."""
        return make_account(self.database_url, scopes)

    def client(self, account: Account) -> httpx2.Client:
        return httpx2.Client(base_url=self.api, headers=account.headers, timeout=10)


def start_server(database_url: str, log_path: Path, extra_env: dict[str, str] | None = None) -> LiveServer:
    port = free_port()
    env = {**os.environ, "AICHATS_DATABASE_URL": database_url, **(extra_env or {})}
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [AICHATS, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"aichats serve exited early:\n{log_path.read_text()}")
        try:
            if httpx2.get(root + "/healthz", timeout=1).status_code == 200:
                return LiveServer(root, database_url, process)
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"aichats serve did not become healthy:\n{log_path.read_text()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server process on each backend, shared by the session's tests.

    It runs no agent workers, so chats stay as the API calls leave them; the agent's
    own tests use ``agent_server``.
    """
    directory = tmp_path_factory.mktemp("server")
    # Every test talks from 127.0.0.1 and some send bad keys on purpose: a session's worth
    # must not reach the failed-authentication limit (tests/api/test_auth_limit.py tests it).
    env = {
        "AICHATS_WORKERS": "0",
        "AICHATS_FILES_DIR": str(directory / "files"),
        "AICHATS_AUTH_FAILURES_PER_MINUTE": "10000",
    }
    server = start_server(database_url, directory / "serve.log", env)
    yield server
    stop_server(server)


@pytest.fixture
def account(live_server: LiveServer) -> Account:
    return live_server.account()


@pytest.fixture
def api(live_server: LiveServer, account: Account) -> Iterator[httpx2.Client]:
    """An httpx2 client for a fresh user with every scope."""
    with live_server.client(account) as client:
        yield client
