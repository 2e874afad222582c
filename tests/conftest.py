"""Fixtures shared by every test: the two databases, and servers on them.

Every test that touches the database runs twice, on SQLite and on PostgreSQL
(127.0.0.1:5432, or ``AICHATS_TEST_POSTGRES_URL``): the ``backend`` fixture. Without
PostgreSQL the PostgreSQL half is skipped, except under ``CI=true``, where it fails.

Tests cannot disturb each other's data. The rule:

- ``database_url`` is a database of the test's own: a copy of a template migrated once
  per session (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL),
  dropped after the test. So a worker a test runs sees only that test's runs.
- A real ``aichats serve`` process is shared by one module's tests (``live_server``, and
  the servers modules start with ``new_database``), on a database of its own for that
  module: a server takes about a second to start, too long for every test. Its tests
  stay apart by making their own users (all data is scoped to its user), and the
  ``live_server`` runs no workers, so no test's chats are answered by another's.
- A test whose calls all answer at once (no stream) can use ``app_server`` instead: the
  app in this process on the test's own ``database_url``, through
  ``httpx2.ASGITransport``. Its setup takes about 10 ms on SQLite and 0.2 s on
  PostgreSQL (mostly the database's copy), where a server process takes a second or
  more. A module opts in by overriding ``server``, which ``api`` and ``account`` use (by
  default ``server`` is the module's ``live_server``). A module of many one-call tests,
  each with its own user, uses ``module_app_server``: shared by the module, on a
  database of its own, as a server process would be.
- Tests that need real HTTP keep a real process: streams, the published clients
  (``tests/e2e``), the browser (``tests/web``), killed processes, client addresses.

Every PostgreSQL database made here is dropped at the latest when the session ends.
The helpers live in ``tests/support``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx2
import pytest

from aichats import clock
from aichats.storage import database
from aichats.storage.database import Database
from tests.support import databases
from tests.support.accounts import Account, make_account
from tests.support.databases import BACKENDS, Templates
from tests.support.servers import AICHATS, AppServer, LiveServer, Server, run_cli, start_server, stop_server

__all__ = [
    "AICHATS",
    "BACKENDS",
    "Account",
    "LiveServer",
    "Server",
    "make_account",
    "run_cli",
    "start_server",
    "stop_server",
]

# Every test talks from 127.0.0.1 and some send bad keys on purpose: a module's worth must
# not reach the failed-authentication limit (tests/api/test_auth_limit.py tests it).
NO_AUTH_LIMIT = "10000"


@pytest.fixture(scope="session", autouse=True)
def database_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    """The session's migrated templates (made when first needed); drops every PostgreSQL
    database made from them that is still there when the session ends."""
    templates = databases.open_session(tmp_path_factory.mktemp("templates"))
    yield templates
    databases.close_session()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``: every test that uses a database runs on each."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, database_templates: Templates, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the test's own, dropped after it."""
    with database_templates.fresh(backend, tmp_path) as url:
        yield url


@pytest.fixture
def anyio_backend() -> str:
    """asyncio, what aichats runs on, for the tests marked ``anyio``."""
    return "asyncio"


@pytest.fixture
def pool_size() -> int:
    """The connections ``db`` may open on PostgreSQL: a module that needs more overrides it."""
    return 2


@pytest.fixture
async def db(database_url: str, pool_size: int) -> AsyncIterator[Database]:
    """The test's own database, connected in this process as a server connects to it (on
    each backend). The test may move the clock: it is put back afterwards."""
    connected = await database.connect(database_url, pool_size=pool_size)
    yield connected
    await connected.close()
    clock.set_clock(None)


@pytest.fixture(scope="module")
def new_database(
    backend: str, database_templates: Templates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], str]]:
    """Makes fresh databases of ``backend`` for a module's servers, all dropped at the module's end."""
    directory = tmp_path_factory.mktemp("db")
    with ExitStack() as stack:
        yield lambda: stack.enter_context(database_templates.fresh(backend, directory))


@pytest.fixture(scope="module")
def live_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server process on each backend, shared by the module's tests, on a database
    of the module's own.

    It runs no agent workers, so chats stay as the API calls leave them; the agent's
    own tests start servers of their own.
    """
    directory = tmp_path_factory.mktemp("server")
    env = {
        "AICHATS_WORKERS": "0",
        "AICHATS_FILES_DIR": str(directory / "files"),
        "AICHATS_AUTH_FAILURES_PER_MINUTE": NO_AUTH_LIMIT,
    }
    server = start_server(new_database(), directory / "serve.log", env)
    yield server
    stop_server(server)


@pytest.fixture
def app_server(database_url: str, tmp_path: Path) -> Iterator[AppServer]:
    """The app in this process on the test's own database (no workers, no socket)."""
    with AppServer(database_url, tmp_path / "files", auth_failures_per_minute=int(NO_AUTH_LIMIT)) as server:
        yield server


@pytest.fixture(scope="module")
def module_app_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app in this process shared by a module's tests, on a database of the module's
    own: for modules of many small tests, each with its own user, where a database per
    test would cost more than the tests."""
    files = tmp_path_factory.mktemp("app") / "files"
    with AppServer(new_database(), files, auth_failures_per_minute=int(NO_AUTH_LIMIT)) as server:
        yield server


@pytest.fixture
def server(live_server: LiveServer) -> Server:
    """The server ``api`` and ``account`` use: the module's ``live_server`` unless the
    module overrides this fixture (with ``app_server``, for calls that do not stream)."""
    return live_server


@pytest.fixture
def account(server: Server) -> Account:
    return server.account()


@pytest.fixture
def api(server: Server, account: Account) -> Iterator[httpx2.Client]:
    """An httpx2 client for a fresh user with every scope."""
    with server.client(account) as client:
        yield client
