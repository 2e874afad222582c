"""Running SQLAlchemy Core statements on the raw database drivers.

Statements are written once with SQLAlchemy Core (against ``schema.py``) and compiled
once per dialect; they then run on the drivers directly: ``sqlite3`` for the
embedded database and ``asyncpg`` for PostgreSQL.

Why not SQLAlchemy's own execution layer? Measured on these machines (Starlette,
uvicorn, wrk, two primary-key selects per request): SQLAlchemy's async engine gave
960 requests/s on aiosqlite and 1,640 on asyncpg; the raw drivers give 14,800 and
4,900. The API's latency budget is a few tens of microseconds, so the drivers it is.

SQLite runs on the event loop: its calls take microseconds and touch a local file, so
a thread hop would cost more than the call. Reads use their own connection (WAL mode
lets them proceed while a write is open); writes share one connection, serialised by
an ``asyncio.Lock`` so that a transaction spanning ``await`` points never interleaves
with another. The transactions of one turn of the event loop commit together
(:meth:`SQLiteDatabase.transaction`), each in a savepoint of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from types import MappingProxyType
from typing import Any, NoReturn, Protocol, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from aichats.storage.pool import Pool

Row = Mapping[str, Any]
T = TypeVar("T")
Params = Mapping[str, Any]
NO_PARAMS: Params = MappingProxyType({})
# Called with a notification's payload, or with None when notifications may have been
# missed (the listening connection dropped): the listener must then assume anything changed.
Listener = Callable[[str | None], None]

_DIALECTS: dict[str, Dialect] = {
    "sqlite": sqlite_dialect.dialect(),
    "postgresql": asyncpg_dialect.dialect(),
}


class UniqueViolation(Exception):
    """An insert or update broke a unique constraint (both drivers map to this)."""


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as its driver takes it: SQL text and the order of its parameters."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]

    def bind(self, params: Params) -> tuple[Any, ...]:
        if self.defaults:
            params = {**self.defaults, **params}
        if len(self.names) == 1:
            return (params[self.names[0]],)
        if not self.names:
            return ()
        return itemgetter(*self.names)(params)


_compiled: dict[tuple[int, str], tuple[sa.Executable, Compiled]] = {}


def compile_statement(statement: sa.Executable, dialect: str) -> Compiled:
    """Compile ``statement`` for ``dialect``, once.

    Statements must be long-lived (module constants, or built by a cached function):
    the cache is keyed by identity and keeps them alive.
    """
    key = (id(statement), dialect)
    hit = _compiled.get(key)
    if hit is not None:
        return hit[1]
    # Every Core statement is a ClauseElement (Executable alone has no compile()), and a
    # select, insert, update or delete compiles with an SQLCompiler: these only narrow the types.
    assert isinstance(statement, sa.ClauseElement), statement
    compiled = statement.compile(dialect=_DIALECTS[dialect])
    assert isinstance(compiled, SQLCompiler), statement
    if "POSTCOMPILE" in str(compiled):
        raise ValueError("expanding IN (...) parameters are not supported; bind one value per parameter")
    names = tuple(compiled.positiontup or ())
    # Binds the statement fixed itself (a literal LIMIT, SQLite's OFFSET 0).
    defaults = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
    result = Compiled(str(compiled), names, defaults)
    _compiled[key] = (statement, result)
    return result


class Connection(Protocol):
    """What a transaction offers: run statements, all or nothing."""

    async def fetch_one(self, statement: sa.Executable, params: Params = ...) -> Row | None: ...

    async def fetch_all(self, statement: sa.Executable, params: Params = ...) -> list[Row]: ...

    async def execute(self, statement: sa.Executable, params: Params = ...) -> int: ...

    async def notify(self, channel: str, payload: str) -> None:
        """Tell listeners on ``channel``, once (and only if) the transaction commits."""


class Database(Protocol):
    """A database: reads outside transactions, writes inside them, and notifications.

    ``listening`` is true while notifications from *other processes* reach this one
    (PostgreSQL LISTEN; on SQLite, as a ``None`` for every listener once another process
    has committed, within ``WATCH_SECONDS``).
    """

    dialect: str
    url: str

    @property
    def listening(self) -> bool: ...

    def others_stamp(self) -> int:
        """What moves when another process commits and no notification tells of it: SQLite's
        ``PRAGMA data_version`` (microseconds to read); always 0 on PostgreSQL, whose
        processes send NOTIFY. A cache kept while ``listening`` that must also be exact
        right after another process's commit (a key revoked by the CLI) compares it.

        SQLite reads it at most once per turn of the event loop: a reading serves the
        callbacks queued before it was taken (a callback queued behind them drops it), each
        of which belongs to a request that had arrived before it, so a commit that reading
        missed did not precede the request."""
        ...

    async def listen(self, channel: str, listener: Listener) -> None: ...

    async def fetch_one(self, statement: sa.Executable, params: Params = ...) -> Row | None: ...

    async def fetch_all(self, statement: sa.Executable, params: Params = ...) -> list[Row]: ...

    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...

    async def run_grouped(self, statement: sa.Executable, params: Params) -> None:
        """Run ``statement`` as a transaction of its own, which may commit together with other
        callers' runs of the same statement (PostgreSQL: :class:`GroupedStatement`). Its
        rows, if any, are not returned."""

    async def write_one(self, statement: sa.Executable, params: Params = ...) -> Row | None:
        """Run one writing statement as a transaction of its own: its first row (``RETURNING``),
        or None. On PostgreSQL the statement alone, one round trip (a transaction block
        would add a BEGIN and a COMMIT); on SQLite on the writer connection."""

    async def fetch_one_grouped(self, statement: sa.Executable, params: Params) -> Row | None:
        """``fetch_one`` of a read (a SELECT), which may run together with other callers'
        reads of the same statement (PostgreSQL: :class:`GroupedRead`, one round trip)."""

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- SQLite


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///path`` URL (``sqlite:///:memory:`` is refused)."""
    path = url.split("://", 1)[1]
    path = path.removeprefix("/")
    if not path or path == ":memory:":
        raise ValueError("the SQLite database must be a file, e.g. sqlite:///aichats.db")
    return path


MMAP_SIZE = 0
# Page caches, in KiB. Each grows only as pages are read, and starts over empty when the
# database changed (the reader's: at each commit of the writer). The reader's holds the pages
# that a thousand users' first list pages touch (a table page per chat, about 84 MiB in
# bench/api.py); with 32 MiB it read most of them again for each page, and the first list
# page ran 12 to 22% slower.
WRITER_CACHE_KIB = 32 * 1024
READER_CACHE_KIB = 128 * 1024


def _sqlite_connect(path: str, *, cache_kib: int, busy_ms: int = 5000) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute(f"PRAGMA busy_timeout={busy_ms}")
    # No memory map. A connection drops its whole map (munmap, then a page fault for every
    # page read again) each time it sees another connection's commit, and this process's
    # reader sees every commit of its own writer. Without it, a list page under commits
    # takes 0.1 page faults instead of 3 to 4, and nothing measured got slower
    # (bench/README.md, fifth session). Explicit, whatever the build's default.
    connection.execute(f"PRAGMA mmap_size={MMAP_SIZE}")
    connection.execute(f"PRAGMA cache_size=-{cache_kib}")
    # Temporary storage in memory. Every transaction is a savepoint of its batch's one SQLite
    # transaction (SQLiteDatabase.transaction), so each page a member changes first goes
    # to a statement journal, which SQLite spills into a new temporary file past 64 KiB:
    # an open, an unlink and 36 pwrite calls per created chat, twice the WAL's own
    # (bench/README.md, seventh session). Here it stays in memory: a batch's pages, at
    # most a few MiB, freed at its commit.
    connection.execute("PRAGMA temp_store=MEMORY")
    return connection


class _SQLiteConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.pending: dict[tuple[str, str], None] = {}  # (channel, payload), once each, in order

    def run(self, statement: sa.Executable, params: Params) -> sqlite3.Cursor:
        compiled = compile_statement(statement, "sqlite")
        try:
            return self._connection.execute(compiled.sql, compiled.bind(params))
        except sqlite3.IntegrityError as error:
            if "UNIQUE" in str(error):
                raise UniqueViolation(str(error)) from error
            raise

    async def fetch_one(self, statement: sa.Executable, params: Params = NO_PARAMS) -> Row | None:
        return self.run(statement, params).fetchone()

    async def fetch_all(self, statement: sa.Executable, params: Params = NO_PARAMS) -> list[Row]:
        return self.run(statement, params).fetchall()

    async def execute(self, statement: sa.Executable, params: Params = NO_PARAMS) -> int:
        return self.run(statement, params).rowcount

    async def notify(self, channel: str, payload: str) -> None:
        self.pending[(channel, payload)] = None


log = logging.getLogger("aichats.database")

# At most this many transactions in one group commit: a member waits for the batch's COMMIT,
# so a batch must not grow for ever under a steady stream of writers.
MAX_BATCH = 64
# How long a transaction waits for another process's write to end (SQLite's busy timeout).
BUSY_SECONDS = 5.0


class DatabaseError(Exception):
    """A transaction lost with its batch (whose COMMIT failed, or was rolled back whole)."""


class _Batch:
    """Transactions that commit together (SQLiteDatabase.transaction)."""

    def __init__(self) -> None:
        self.members = 0
        self.pending: dict[tuple[str, str], None] = {}  # every member's notifications, in order
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.committer: asyncio.Task[None] | None = None  # kept: the loop holds its tasks weakly

    def fail(self, error: BaseException) -> None:
        if not self.committed.done():
            self.committed.set_exception(error)
            self.committed.exception()  # retrieved: a batch that no member waits for logs nothing


# How often an SQLite database looks for commits by other processes (a CLI revoking a key,
# a scheduler tick, another server process): a PRAGMA that costs microseconds.
WATCH_SECONDS = 0.5


class SQLiteDatabase:
    """Notifications are delivered within the process, after the commit. Other processes'
    commits cannot name what they changed, so once anything listens, a watcher reads
    ``PRAGMA data_version`` on the writer connection (which moves only when *another*
    connection commits) every ``WATCH_SECONDS`` and, when it moved, tells every listener
    ``None``: anything may have changed. ``listening`` is true while it runs, so streams
    wait for a notification instead of re-reading every second."""

    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = url
        path = sqlite_path(url)
        # The writer waits for other processes' writes itself, without blocking the loop (_begin).
        self._writer = _sqlite_connect(path, cache_kib=WRITER_CACHE_KIB, busy_ms=0)
        self._reader = _SQLiteConnection(_sqlite_connect(path, cache_kib=READER_CACHE_KIB))
        self._write_lock = asyncio.Lock()
        self._batch: _Batch | None = None  # the transaction the next writers join, until it commits
        self._listeners: dict[str, list[Listener]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._turn_stamp: int | None = None  # others_stamp() in this turn of the event loop

    @property
    def listening(self) -> bool:
        return self._watcher is not None and not self._watcher.done()

    async def listen(self, channel: str, listener: Listener) -> None:
        self._listeners.setdefault(channel, []).append(listener)
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_other_processes())

    def _data_version(self) -> int:
        return int(self._writer.execute("PRAGMA data_version").fetchone()[0])

    def others_stamp(self) -> int:
        stamp = self._turn_stamp
        if stamp is None:  # the first reading of this turn of the loop (Database.others_stamp)
            stamp = self._turn_stamp = self._data_version()
            asyncio.get_running_loop().call_soon(self._end_turn)
        return stamp

    def _end_turn(self) -> None:
        self._turn_stamp = None

    async def _watch_other_processes(self) -> None:
        seen = self._data_version()
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            version = self._data_version()
            if version != seen:
                seen = version
                for listeners in list(self._listeners.values()):
                    for listener in list(listeners):
                        try:
                            listener(None)
                        except Exception:  # one broken listener must not stop the others, nor the watcher
                            log.exception("a listener failed")

    # The reader's statements run here directly (not through its async methods): a read
    # outside a transaction is the commonest call there is, one coroutine fewer each.
    async def fetch_one(self, statement: sa.Executable, params: Params = NO_PARAMS) -> Row | None:
        return self._reader.run(statement, params).fetchone()

    async def fetch_all(self, statement: sa.Executable, params: Params = NO_PARAMS) -> list[Row]:
        return self._reader.run(statement, params).fetchall()

    fetch_one_grouped = fetch_one  # a read here is a call on the event loop: no round trip to share

    async def write_one(self, statement: sa.Executable, params: Params = NO_PARAMS) -> Row | None:
        async with self.transaction() as tx:
            return await tx.fetch_one(statement, params)

    async def run_grouped(self, statement: sa.Executable, params: Params) -> None:
        # Every transaction here commits with the others of its turn of the event loop.
        async with self.transaction() as tx:
            await tx.execute(statement, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A transaction, committed with those of the other tasks that run one in the same
        turn of the event loop (a group commit).

        Each transaction is a savepoint of the batch's one SQLite transaction: its failure
        rolls back its own statements alone. The first of a batch starts a task that commits
        it once the tasks already waiting for the writer have had their turn; every member
        returns only after that COMMIT (or raises its error), and notifications go out after
        it. Under load that turns a COMMIT per request (its WAL pages written, the same table
        and index pages again and again) into one per batch: ``bench/api.py``'s ``create``.
        """
        async with self._write_lock:
            batch = self._batch
            if batch is None:
                await self._begin()
                batch = self._batch = _Batch()
                batch.committer = asyncio.get_running_loop().create_task(self._commit(batch))
            self._writer.execute("SAVEPOINT member")
            connection = _SQLiteConnection(self._writer)
            try:
                yield connection
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK TO member")
                    self._writer.execute("RELEASE member")
                else:  # SQLite gave up the whole transaction (a full disk, say): the batch is lost
                    self._batch = None
                    batch.fail(DatabaseError("the transaction was rolled back with its batch"))
                raise
            self._writer.execute("RELEASE member")
            batch.pending.update(connection.pending)
            batch.members += 1
            if batch.members >= MAX_BATCH:
                self._commit_now(batch)
        await asyncio.shield(batch.committed)

    async def _begin(self) -> None:
        """BEGIN IMMEDIATE (the write lock), waiting up to ``BUSY_SECONDS`` while another
        process writes: on the loop, which goes on serving (SQLite's own busy wait would
        block it, and with it this process's batch that the other may be waiting for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_SECONDS
        pause = 0.0005
        while True:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or loop.time() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    async def _commit(self, batch: _Batch) -> None:
        """Commit ``batch`` once the tasks that wait for the writer now have joined it."""
        async with self._write_lock:
            if self._batch is batch:
                self._commit_now(batch)

    def _commit_now(self, batch: _Batch) -> None:
        self._batch = None
        try:
            self._writer.execute("COMMIT")
        except BaseException as error:
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            batch.fail(error)
            return
        batch.committed.set_result(None)
        for channel, payload in batch.pending:
            for listener in self._listeners.get(channel, ()):
                listener(payload)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        async with self._write_lock:  # what a last batch holds is committed, not lost
            if self._batch is not None:
                self._commit_now(self._batch)
        self._writer.close()
        self._reader._connection.close()


# ----------------------------------------------------------------------- PostgreSQL


def asyncpg_dsn(url: str) -> str:
    """``postgresql://`` DSN for asyncpg (it does not take SQLAlchemy's ``+driver``)."""
    return "postgresql://" + url.split("://", 1)[1]


class _PostgresConnection:
    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.pending: dict[tuple[str, str], None] = {}  # (channel, payload), once each, in order

    async def fetch_one(self, statement: sa.Executable, params: Params = NO_PARAMS) -> Row | None:
        compiled = compile_statement(statement, "postgresql")
        return await _translate(self._connection.fetchrow(compiled.sql, *compiled.bind(params)))

    async def fetch_all(self, statement: sa.Executable, params: Params = NO_PARAMS) -> list[Row]:
        compiled = compile_statement(statement, "postgresql")
        return await _translate(self._connection.fetch(compiled.sql, *compiled.bind(params)))

    async def execute(self, statement: sa.Executable, params: Params = NO_PARAMS) -> int:
        compiled = compile_statement(statement, "postgresql")
        status = await _translate(self._connection.execute(compiled.sql, *compiled.bind(params)))
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def notify(self, channel: str, payload: str) -> None:
        self.pending[(channel, payload)] = None  # sent by :meth:`send_pending`, before the commit

    async def send_pending(self) -> None:
        """One NOTIFY per channel and payload of the transaction, in one statement: a
        transaction that says the same thing three times costs one round trip, not three."""
        if self.pending:
            channels, payloads = zip(*self.pending, strict=True)
            await self._connection.execute(
                "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)", list(channels), list(payloads)
            )
            self.pending.clear()


async def _translate(awaitable: Any) -> Any:
    try:
        return await awaitable
    except BaseException as error:
        _raise_translated(error)


def _raise_translated(error: BaseException) -> NoReturn:
    """Raise ``error``, as :class:`UniqueViolation` if it is asyncpg's."""
    if isinstance(error, asyncpg.UniqueViolationError):
        raise UniqueViolation(str(error)) from error
    raise error


async def _borrowing(pool: Pool, call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``call(connection, *args)`` on a connection of ``pool``, borrowed without its context
    manager (a read outside a transaction is the commonest call there is): given back
    after, or ended if the call was cancelled in flight; errors translated
    (:func:`_raise_translated`)."""
    connection = await pool.acquire()
    try:
        result = await call(connection, *args)
    except BaseException as error:
        pool.release(connection, error)
        _raise_translated(error)
    pool.release(connection)
    return result


# A group is at most this many runs; at most this many groups of a statement are in flight
# at once (one waits for its commit while the next is sent).
GROUP_SIZE = 100
GROUPS_IN_FLIGHT = 2


class GroupedStatement:
    """One statement, run for every caller that runs it at the same time in one round trip
    and one transaction: a group commit.

    Alone, a statement that is its own transaction (creating a chat) costs PostgreSQL a
    round trip, an executor start and a commit with its WAL flush, and costs this process a
    send and a receive: about as much as the statement's own work (bench/README.md, eighth
    session). Runs that arrive while a group is in flight wait for the next, and asyncpg's
    ``executemany`` sends them all at once; PostgreSQL runs them in one transaction. A run
    that finds nothing of its statement in flight goes at once, alone, from its caller's
    task (as ``fetch_one`` would: cancelled with its caller); a group of one goes alone too.

    All or nothing, as ``executemany`` is. When PostgreSQL refuses one run (a unique or
    foreign key violation, a bad value), the whole group was rolled back: each run then goes
    again alone, so that each caller gets its own outcome. On any other failure (the
    connection lost, a cancellation), the group may or may not have committed: every caller
    gets the error, and nothing runs twice.

    A caller cancelled before its group is sent is left out of it; once sent, its run
    commits or not with the group, as a cancelled single statement would (and is left out
    of the runs alone that follow a refused group).
    """

    def __init__(self, pool: Pool, compiled: Compiled) -> None:
        self._pool = pool
        self._compiled = compiled
        self._waiting: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()  # kept: the loop holds its tasks weakly

    async def run(self, args: tuple[Any, ...]) -> Any:
        """Run the statement with ``args`` (bound by the caller's own compiled statement: two
        statements of the same SQL may differ in the values they fixed themselves): its
        outcome (None for a write). With nothing in flight it goes at once, alone, from the
        caller's task (a group would only add a task and a turn of the event loop);
        otherwise in the next group."""
        if not self._in_flight:
            self._in_flight += 1
            try:
                return await self._now(args)
            finally:
                self._in_flight -= 1
                if self._waiting and self._in_flight < GROUPS_IN_FLIGHT:
                    self._start_drain()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        if self._in_flight < GROUPS_IN_FLIGHT:
            self._start_drain()
        return await future

    def _start_drain(self) -> None:
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _now(self, args: tuple[Any, ...]) -> Any:
        """One run alone: from its caller's task, cancelled with its caller, as ``fetch_one``."""
        return await _borrowing(self._pool, self._send_alone, args)

    async def _send_group(self, connection: asyncpg.Connection, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Every run of a group, in one round trip: each one's outcome, in order."""
        await connection.executemany(self._compiled.sql, runs)
        return [None] * len(runs)

    async def _send_alone(self, connection: asyncpg.Connection, args: tuple[Any, ...]) -> Any:
        await connection.execute(self._compiled.sql, *args)

    async def _drain(self) -> None:
        """Send groups while runs wait (those of this turn of the event loop join the first)."""
        group: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        try:
            while self._waiting:
                group = [run for run in self._waiting[:GROUP_SIZE] if not run[1].done()]
                del self._waiting[:GROUP_SIZE]
                if len(group) == 1:
                    await self._run_alone(*group[0])
                elif group:
                    await self._run(group)
        except BaseException:
            for _, future in [*group, *self._waiting]:  # cancelled: the loop is ending, nothing will send them
                future.cancel()  # (nothing, for a run already settled)
            raise
        finally:
            self._in_flight -= 1

    async def _run(self, group: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        connection = None
        try:
            connection = await self._pool.acquire()
            outcomes = await self._send_group(connection, [args for args, _ in group])
        except BaseException as error:
            if connection is not None:
                self._pool.release(connection, error)
            # PostgreSQL refused a run, or asyncpg could not encode a run's argument (its
            # DataError, a PostgresError too): asyncpg rolled the group back.
            refused = isinstance(error, asyncpg.PostgresError) and connection is not None and not connection.is_closed()
            if refused:
                for args, future in group:
                    if not future.done():  # its caller, cancelled meanwhile, is left out
                        await self._run_alone(args, future)
            else:
                for _, future in group:
                    _settle(future, error=error)
            if not isinstance(error, Exception):
                raise  # this task was cancelled: the database is closing
            return
        self._pool.release(connection)
        for (_, future), outcome in zip(group, outcomes, strict=True):
            _settle(future, outcome)

    async def _run_alone(self, args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        """One run alone, from the group's task: its outcome goes to its caller's future."""
        try:
            outcome = await self._now(args)
        except BaseException as error:
            _settle(future, error=error)
            if not isinstance(error, Exception):
                raise  # this task was cancelled: the database is closing
        else:
            _settle(future, outcome)


# A grouped read's wrapper: exactly one row per run, in order (asyncpg's ``fetchmany``
# returns every run's rows as one list), ending with a column that is null when the
# statement found no row.
_FOUND = "found__"
_ONE_ROW_EACH = (
    "SELECT r.* FROM (SELECT 1) AS one__ LEFT JOIN LATERAL"
    f" (SELECT s.*, true AS {_FOUND} FROM ({{}}\n) AS s LIMIT 1) AS r ON true"
)


class _FoundRow(asyncpg.Record):
    """A grouped read's row: the statement's own, every column where ``fetch_one`` puts it,
    the marker column last and out of sight of ``len``, iteration, ``keys``, ``values``,
    ``items`` and so ``dict``. Read it by name or by a position from the start, as every
    caller does: a negative position, a slice, ``get`` of the marker's name, ``repr`` and
    equality with a plain Record still see the marker."""

    def __len__(self) -> int:
        return super().__len__() - 1

    def __iter__(self) -> Iterator[Any]:
        return islice(super().__iter__(), len(self))

    def keys(self) -> Iterator[str]:
        return islice(super().keys(), len(self))

    def values(self) -> Iterator[Any]:
        return islice(super().values(), len(self))

    def items(self) -> Iterator[tuple[str, Any]]:
        return islice(super().items(), len(self))


class GroupedRead(GroupedStatement):
    """One read (a SELECT), run for every caller that runs it at the same time in one round
    trip: each caller gets its first row, or None, as from ``fetch_one``.

    With 32 readers at once, a one-row primary-key read alone costs this process about 22 µs
    of CPU and the machine about 45 (PostgreSQL's included: a send, a wake-up, a receive, an
    executor start); grouped, about 8 and 15 (``bench/grouped_reads.py``; bench/README.md,
    tenth session). With 4 readers, grouped reads are slower (two round trips in flight
    where alone there are four) for the same CPU. asyncpg's ``fetchmany`` sends the runs at once,
    each wrapped in ``_ONE_ROW_EACH`` so that the rows it returns as one list say whose they
    are. The runs share an implicit transaction, but each sees what was committed before it
    started (read committed): a read sees every commit that preceded its call.
    """

    def __init__(self, pool: Pool, compiled: Compiled) -> None:
        super().__init__(pool, compiled)
        self._wrapped = _ONE_ROW_EACH.format(compiled.sql)

    async def _send_group(self, connection: asyncpg.Connection, runs: list[tuple[Any, ...]]) -> list[Any]:
        rows = await connection.fetchmany(self._wrapped, runs, record_class=_FoundRow)
        return [row if row[_FOUND] else None for row in rows]

    async def _send_alone(self, connection: asyncpg.Connection, args: tuple[Any, ...]) -> Any:
        return await connection.fetchrow(self._compiled.sql, *args)


def _settle(future: asyncio.Future[Any], outcome: Any = None, error: BaseException | None = None) -> None:
    """End a caller's wait: with its run's outcome, or its error translated
    (:func:`_raise_translated`); cancelled when that error is not an Exception (a cancellation)."""
    if future.done():
        return
    if error is None:
        future.set_result(outcome)
    elif not isinstance(error, Exception):
        future.cancel()
    else:
        try:
            _raise_translated(error)
        except Exception as translated:
            future.set_exception(translated)


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str, pool: Pool) -> None:
        self.url = url
        self._pool = pool
        self._groups: dict[tuple[type[GroupedStatement], str], GroupedStatement] = {}  # by kind and SQL
        self._listeners: dict[str, list[Listener]] = {}
        self._listen_connection: Any = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        connection = self._listen_connection
        return connection is not None and not connection.is_closed()

    def others_stamp(self) -> int:
        return 0  # another process's commits that matter come with a NOTIFY

    async def listen(self, channel: str, listener: Listener) -> None:
        """Call ``listener`` for each NOTIFY on ``channel``, from any process.

        One connection per process carries every LISTEN. If it drops, listeners hear
        ``None`` (anything may have changed) and it is re-established in the background.
        """
        first = channel not in self._listeners
        self._listeners.setdefault(channel, []).append(listener)
        if self._listen_connection is None:
            await self._open_listen_connection()
        elif first and self.listening:
            await self._listen_connection.add_listener(channel, self._dispatch)

    async def _open_listen_connection(self) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(self.url))
        connection.add_termination_listener(self._on_listen_lost)
        for channel in self._listeners:
            await connection.add_listener(channel, self._dispatch)
        self._listen_connection = connection

    def _dispatch(self, _connection: object, _pid: int, channel: str, payload: object) -> None:
        for listener in self._listeners.get(channel, ()):
            listener(str(payload))  # always a str: NOTIFY payloads are text

    def _everyone(self, payload: str | None) -> None:
        for listeners in self._listeners.values():
            for listener in listeners:
                listener(payload)

    def _on_listen_lost(self, _connection: Any) -> None:
        self._everyone(None)
        if not self._closed and self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                await self._open_listen_connection()
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._everyone(None)  # whatever was sent while deaf is lost
            break
        self._reconnecting = None

    @classmethod
    async def connect(cls, url: str, pool_size: int) -> PostgresDatabase:
        dsn = asyncpg_dsn(url)

        def connect() -> Awaitable[asyncpg.Connection]:
            # Connections carry no session state (no SET, LISTEN or session locks): the pool
            # lends them on without a reset query.
            return asyncpg.connect(
                dsn,
                statement_cache_size=512,
                # Every statement is a keyset query on an index chosen by its shape, not its
                # values: generic plans skip re-planning and never swap the per-user index
                # for a scan of the primary key when one user owns most rows.
                server_settings={"plan_cache_mode": "force_generic_plan"},
            )

        return cls(url, await Pool.open(connect, pool_size))

    async def fetch_one(self, statement: sa.Executable, params: Params = NO_PARAMS) -> Row | None:
        compiled = compile_statement(statement, "postgresql")
        return await _borrowing(self._pool, asyncpg.Connection.fetchrow, compiled.sql, *compiled.bind(params))

    async def fetch_all(self, statement: sa.Executable, params: Params = NO_PARAMS) -> list[Row]:
        compiled = compile_statement(statement, "postgresql")
        return await _borrowing(self._pool, asyncpg.Connection.fetch, compiled.sql, *compiled.bind(params))

    async def write_one(self, statement: sa.Executable, params: Params = NO_PARAMS) -> Row | None:
        return await self.fetch_one(statement, params)  # a statement outside a block commits alone

    async def _run_in_group(self, kind: type[GroupedStatement], statement: sa.Executable, params: Params) -> Any:
        """Run ``statement`` in the one ``kind`` of this process that groups its SQL's runs."""
        compiled = compile_statement(statement, "postgresql")
        grouped = self._groups.get((kind, compiled.sql))
        if grouped is None:
            grouped = self._groups[kind, compiled.sql] = kind(self._pool, compiled)
        return await grouped.run(compiled.bind(params))

    async def run_grouped(self, statement: sa.Executable, params: Params) -> None:
        await self._run_in_group(GroupedStatement, statement, params)

    async def fetch_one_grouped(self, statement: sa.Executable, params: Params) -> Row | None:
        return await self._run_in_group(GroupedRead, statement, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._pool.connection() as connection, connection.transaction():
            wrapped = _PostgresConnection(connection)
            yield wrapped
            await wrapped.send_pending()  # inside the transaction: delivered if, and when, it commits

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._listen_connection is not None:
            await self._listen_connection.close()
        await self._pool.close()


async def connect(url: str, *, pool_size: int = 10) -> Database:
    """Open the database that ``url`` names."""
    if url.startswith("sqlite"):
        return SQLiteDatabase(url)
    return await PostgresDatabase.connect(url, pool_size)


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for ``url`` (used by migrations)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


__all__ = [
    "Compiled",
    "Connection",
    "Database",
    "PostgresDatabase",
    "Row",
    "SQLiteDatabase",
    "UniqueViolation",
    "compile_statement",
    "connect",
    "sqlalchemy_url",
]
