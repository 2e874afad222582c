"""Test databases: one migrated template per backend, copied for every database a test needs.

Migrating takes about half a second on PostgreSQL; a copy takes a fraction of that (a
``CREATE DATABASE ... TEMPLATE`` on PostgreSQL, a file copy on SQLite). So each backend is
migrated once per session, into a template no test touches, and each test (or each server)
gets a copy of its own, dropped after it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import sqlite3
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from aichats.storage import migrate

POSTGRES_ADMIN_URL = os.environ.get("AICHATS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]
COPIES_AHEAD = 2  # PostgreSQL databases made before a test asks for one


def backend_of(database_url: str) -> str:
    """``sqlite`` or ``postgresql``: the kind of database ``database_url`` names."""
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


def postgres_admin(sql: str) -> None:
    """Run ``sql`` on the PostgreSQL server's maintenance database (CREATE/DROP DATABASE)."""
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def postgres_url(name: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _unreachable(error: BaseException) -> str:
    return f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}"


def skip_without_postgres(message: str) -> None:
    """A missing PostgreSQL skips the test, except under ``CI=true``, where it fails it."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def postgres_database(name: str) -> str:
    """A new, empty PostgreSQL database (never migrated); the caller drops it."""
    try:
        postgres_admin(f'CREATE DATABASE "{name}"')
    except (TimeoutError, OSError) as error:
        skip_without_postgres(_unreachable(error))
    return postgres_url(name)


def drop_postgres_database(name: str) -> None:
    postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Test databases are named after the process that made them: aichats_<kind>_<pid>_<token>.
_TEST_DATABASE = re.compile(r"aichats_(?:template|test|first)_(\d+)_\w+")


def drop_orphans() -> None:
    """Drop the test databases of sessions that were killed before they could (their
    process is gone). Only for a PostgreSQL on this machine, where those pids mean something."""
    if urlsplit(POSTGRES_ADMIN_URL).hostname not in ("127.0.0.1", "localhost", "::1"):
        return
    for row in query(POSTGRES_ADMIN_URL, "SELECT datname FROM pg_database WHERE datname LIKE 'aichats\\_%'"):
        match = _TEST_DATABASE.fullmatch(row["datname"])
        if match and not _alive(int(match[1])):
            drop_postgres_database(row["datname"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def query(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of ``sql`` on a PostgreSQL test database (asyncpg, $1 placeholders)."""
    import asyncpg

    async def run() -> list[dict[str, Any]]:
        connection = await asyncpg.connect(database_url, timeout=5)
        try:
            return [dict(row) for row in await connection.fetch(sql, *args)]
        finally:
            await connection.close()

    return asyncio.run(run())


def execute(database_url: str, sql: str) -> None:
    """Run ``sql`` (no parameters) on a test database of either backend, as another process
    would: behind the back of any server using it."""
    if backend_of(database_url) == "sqlite":
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as connection, connection:
            connection.execute(sql)
    else:
        query(database_url, sql)


class Templates:
    """The session's migrated templates, made on first use, and every copy made of them.

    On PostgreSQL the next copies are made, and used copies are dropped, on threads of
    their own while tests run. ``close`` waits for them, then drops what is left (the
    templates, the unused next copies, any copy a failed teardown left), so test databases
    do not pile up on the server.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        self._templates: dict[str, str] = {}
        self._postgres_error: str | None = None
        self._postgres_names: set[str] = set()
        # PostgreSQL copies are made ahead, and dropped, on threads of their own: a copy
        # waits for a checkpoint (a few tenths of a second) while tests run, and two copies
        # under way at once share one.
        self._background = ThreadPoolExecutor(COPIES_AHEAD, thread_name_prefix="test-databases")
        self._next_copies: deque[Future[str]] = deque()

    def template(self, backend: str) -> str:
        """The migrated template of ``backend``: its file (SQLite) or its database name."""
        if backend in self._templates:
            return self._templates[backend]
        if backend == "sqlite":
            path = self.directory / "template.db"
            migrate.upgrade(f"sqlite:///{path}")
            self._templates[backend] = str(path)
            return str(path)
        if self._postgres_error is not None:
            skip_without_postgres(self._postgres_error)  # said once; not a 5 s wait per test
        name = f"aichats_template_{self.tag}"
        try:
            drop_orphans()
            postgres_admin(f'CREATE DATABASE "{name}"')
        except (TimeoutError, OSError) as error:
            self._postgres_error = _unreachable(error)
            skip_without_postgres(self._postgres_error)
        self._postgres_names.add(name)
        migrate.upgrade(postgres_url(name))
        self._templates[backend] = name
        return name

    def copy(self, backend: str, directory: Path | None = None) -> str:
        """A new database of ``backend`` with the migrated schema and no rows; its URL."""
        template = self.template(backend)
        if backend == "sqlite":
            path = (directory or self.directory) / f"aichats-{secrets.token_hex(4)}.db"
            shutil.copyfile(template, path)
            return f"sqlite:///{path}"
        while len(self._next_copies) < COPIES_AHEAD + 1:
            self._next_copies.append(self._background.submit(self._copy_postgres, template))
        return postgres_url(self._next_copies.popleft().result())

    def _copy_postgres(self, template: str) -> str:
        name = f"aichats_test_{self.tag}_{secrets.token_hex(4)}"
        self._postgres_names.add(name)  # before it exists: ``close`` drops it even if this fails midway
        # FILE_COPY: a small database is copied faster than WAL_LOG writes it, and is then dropped faster.
        postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        return name

    def _drop_postgres(self, name: str) -> None:
        drop_postgres_database(name)
        self._postgres_names.discard(name)

    def drop(self, database_url: str) -> None:
        """Drop a copy, in the background (a SQLite file is left to pytest's temporary directories)."""
        if backend_of(database_url) == "postgresql":
            self._background.submit(self._drop_postgres, database_url.rsplit("/", 1)[1])

    @contextmanager
    def fresh(self, backend: str, directory: Path | None = None) -> Iterator[str]:
        """A copy for the ``with`` block, dropped after it."""
        url = self.copy(backend, directory)
        try:
            yield url
        finally:
            self.drop(url)

    def close(self) -> None:
        self._background.shutdown(wait=True)
        for name in sorted(self._postgres_names):
            drop_postgres_database(name)
        self._postgres_names.clear()
        self._templates.clear()


# The session's templates, for ``fresh_database``: test bodies and module fixtures call it
# directly, so it cannot wait for a fixture. ``tests/conftest.py`` opens and closes it.
_session: Templates | None = None


def open_session(directory: Path) -> Templates:
    global _session
    _session = Templates(directory)
    return _session


def close_session() -> None:
    global _session
    if _session is not None:
        _session.close()
        _session = None


def session_templates() -> Templates:
    assert _session is not None, "the test session's templates are not open (tests/conftest.py opens them)"
    return _session


@contextmanager
def fresh_database(backend: str, directory: Path | None = None) -> Iterator[str]:
    """A new, migrated, empty database of ``backend`` (``sqlite`` or ``postgresql``), dropped after.

    Without PostgreSQL the test is skipped (failed under ``CI=true``).
    """
    with session_templates().fresh(backend, directory) as url:
        yield url
