"""Statements run as transactions of their own, grouped (``Database.run_grouped``): on
PostgreSQL the runs that arrive together share one round trip and one commit
(:class:`~aichats.storage.database.GroupedStatement`); each caller still gets its own
outcome, and nothing runs twice. Reads grouped the same way (``Database.fetch_one_grouped``,
:class:`~aichats.storage.database.GroupedRead`) each get their own row."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import sqlalchemy as sa

from aichats.storage import database
from aichats.storage.database import Database, PostgresDatabase, UniqueViolation, asyncpg_dsn
from aichats.storage.schema import users

pytestmark = pytest.mark.anyio

_INSERT_USER = sa.insert(users).values(id=sa.bindparam("id"), created_at=0)
# The same insert after ``seconds`` of sleep (PostgreSQL only): a group held in flight.
_SLOW_INSERT_USER = sa.insert(users).from_select(
    ["id", "created_at"],
    sa.select(sa.bindparam("id", type_=sa.String), sa.literal(0)).select_from(
        sa.func.pg_sleep(sa.bindparam("seconds", type_=sa.Float))
    ),
)
postgresql_only = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
def pool_size() -> int:
    return 3  # the groups' two, and one more for the test's own reads


async def stored(db: Database, prefix: str) -> set[str]:
    rows = await db.fetch_all(sa.select(users.c.id).where(users.c.id.startswith(prefix)))
    return {row["id"] for row in rows}


async def test_runs_at_the_same_time_all_commit(db: Database) -> None:
    ids = [f"user_group_{n}" for n in range(30)]
    await asyncio.gather(*(db.run_grouped(_INSERT_USER, {"id": id_}) for id_ in ids))
    assert await stored(db, "user_group_") == set(ids)
    if db.dialect == "postgresql":  # in few transactions: rows of one transaction share its xmin
        xmin = sa.select(sa.func.count(sa.distinct(sa.literal_column("xmin::text")))).where(
            users.c.id.startswith("user_group_")
        )
        transactions = await db.fetch_one(xmin)
        assert transactions is not None and transactions[0] <= 2


async def test_a_refused_run_fails_alone(db: Database) -> None:
    """One run of a group breaks a unique constraint: it gets the (translated) error, and
    the rest of its group commits."""
    await db.run_grouped(_INSERT_USER, {"id": "user_refused_taken"})
    ids = [f"user_refused_{n}" for n in range(10)]
    ids.insert(4, "user_refused_taken")
    outcomes = await asyncio.gather(*(db.run_grouped(_INSERT_USER, {"id": id_}) for id_ in ids), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [type(None)] * 4 + [UniqueViolation] + [type(None)] * 6
    assert await stored(db, "user_refused_") == set(ids)


@postgresql_only
async def test_a_caller_cancelled_before_its_group_is_sent_is_left_out(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(db, PostgresDatabase)
    monkeypatch.setattr(database, "GROUPS_IN_FLIGHT", 1)
    first = asyncio.create_task(db.run_grouped(_SLOW_INSERT_USER, {"id": "user_left_first", "seconds": 0.5}))
    await asyncio.sleep(0.1)  # in flight (alone: nothing was), so the next waits for a group
    cancelled = asyncio.create_task(db.run_grouped(_SLOW_INSERT_USER, {"id": "user_left_out", "seconds": 0}))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    await first
    await db.run_grouped(_SLOW_INSERT_USER, {"id": "user_left_last", "seconds": 0})  # after the next group
    assert cancelled.cancelled()
    assert await stored(db, "user_left_") == {"user_left_first", "user_left_last"}
    assert db._pool.idle == db._pool.size  # every connection given back


@postgresql_only
async def test_a_caller_cancelled_while_its_group_is_refused_does_not_run_alone(db: Database) -> None:
    """The group is rolled back by another run's violation; its runs go again alone, but
    not that of a caller who has gone meanwhile: nothing of it is stored."""
    await db.run_grouped(_INSERT_USER, {"id": "user_gone_taken"})
    # Alone, as nothing of its statement was in flight; the next two go as one group.
    first = asyncio.create_task(db.run_grouped(_SLOW_INSERT_USER, {"id": "user_gone_first", "seconds": 0}))
    refused = asyncio.create_task(db.run_grouped(_SLOW_INSERT_USER, {"id": "user_gone_taken", "seconds": 0.5}))
    gone = asyncio.create_task(db.run_grouped(_SLOW_INSERT_USER, {"id": "user_gone_left", "seconds": 0}))
    await asyncio.sleep(0.2)  # the group is in flight: the first run sleeps, then breaks the constraint
    gone.cancel()
    with pytest.raises(UniqueViolation):
        await refused
    assert gone.cancelled()
    await first
    assert await stored(db, "user_gone_") == {"user_gone_taken", "user_gone_first"}


@postgresql_only
async def test_a_group_whose_connection_is_lost_fails_whole_and_runs_nothing_again(
    db: Database, database_url: str
) -> None:
    """Whether a group whose connection was lost committed is unknown: every caller gets the
    error, and none runs again alone (which could store it twice)."""
    first, slow, quick = (
        db.run_grouped(_SLOW_INSERT_USER, {"id": "user_lost_first", "seconds": 0}),  # alone: nothing was in flight
        db.run_grouped(_SLOW_INSERT_USER, {"id": "user_lost_slow", "seconds": 5}),
        db.run_grouped(_SLOW_INSERT_USER, {"id": "user_lost_quick", "seconds": 0}),
    )
    group = asyncio.gather(first, slow, quick, return_exceptions=True)
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            pids = await admin.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
            )
            if pids:
                break
        assert len(pids) == 1
        await admin.execute("SELECT pg_terminate_backend($1)", pids[0]["pid"])
    finally:
        await admin.close()
    first_outcome, *outcomes = await asyncio.wait_for(group, 10)
    assert first_outcome is None
    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    assert outcomes[0] is outcomes[1]  # the group's one error
    assert await stored(db, "user_lost_") == {"user_lost_first"}


# ------------------------------------------------------------------ grouped reads

_USER = sa.select(users.c.pk, users.c.id, users.c.created_at).where(users.c.id == sa.bindparam("id"))


async def test_reads_at_the_same_time_each_get_their_own_row_as_fetch_one_gives_it(db: Database) -> None:
    ids = [f"user_read_{n}" for n in range(20)]
    for id_ in ids:
        await db.run_grouped(_INSERT_USER, {"id": id_})
    asked = [*ids[:10], "user_read_missing", *ids[10:]]
    rows = await asyncio.gather(*(db.fetch_one_grouped(_USER, {"id": id_}) for id_ in asked))
    assert rows[10] is None
    for id_, row in zip(asked, rows, strict=True):
        if id_ == "user_read_missing":
            continue
        alone = await db.fetch_one(_USER, {"id": id_})
        assert row is not None and alone is not None
        # The same row by position, by name, and as a whole: no column more, none less.
        assert (row[0], row[1], row[2]) == (alone[0], alone[1], alone[2])
        assert row["id"] == id_
        assert dict(row) == dict(alone)
        assert len(row) == len(alone) == 3
        assert list(row) == list(alone)
        assert list(row.keys()) == ["pk", "id", "created_at"]


@postgresql_only
async def test_reads_at_the_same_time_share_one_round_trip(db: Database) -> None:
    """The reads of one turn of the event loop go at most in two transactions, so with two
    ``now()`` (each read alone would have its own): the first alone, as nothing was in
    flight, the others as one group."""
    started = sa.select(sa.func.now().cast(sa.Text).label("at"), sa.bindparam("n", type_=sa.Integer).label("n"))
    rows = await asyncio.gather(*(db.fetch_one_grouped(started, {"n": n}) for n in range(30)))
    assert [row["n"] for row in rows if row is not None] == list(range(30))
    assert len({row["at"] for row in rows if row is not None}) == 2


async def test_a_refused_read_fails_alone(db: Database) -> None:
    """One read of a group is refused (a value its statement cannot cast): it gets the error,
    the others their rows."""
    as_number = sa.select(sa.cast(sa.bindparam("text", type_=sa.Text), sa.Integer).label("number"))
    values = ["1", "2", "not a number", "4"]
    outcomes = await asyncio.gather(
        *(db.fetch_one_grouped(as_number, {"text": value}) for value in values), return_exceptions=True
    )
    if db.dialect == "postgresql":
        assert isinstance(outcomes[2], asyncpg.InvalidTextRepresentationError)
    else:  # SQLite casts what it cannot read as a number to 0
        assert outcomes[2] is not None and outcomes[2]["number"] == 0
    assert [outcomes[n]["number"] for n in (0, 1, 3)] == [1, 2, 4]  # type: ignore[index]


@postgresql_only
async def test_a_read_alone_cancelled_in_flight_ends_its_connection(db: Database) -> None:
    """A read that went alone (nothing of its statement in flight) is its caller's: cancelled
    with its query in flight, its connection is terminated, and the next read is answered."""
    assert isinstance(db, PostgresDatabase)
    sleep = sa.select(sa.func.pg_sleep(sa.bindparam("seconds", type_=sa.Float)).cast(sa.Text).label("slept"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(db.fetch_one_grouped(sleep, {"seconds": 5}), 0.2)
    row = await asyncio.wait_for(db.fetch_one_grouped(sleep, {"seconds": 0}), 5)
    assert row is not None and row["slept"] == ""
    assert db._pool.idle == db._pool.size == 1  # the cancelled read's connection was ended, not lent again


async def test_statements_of_the_same_sql_read_each_with_its_own_values(db: Database) -> None:
    """Two statements whose SQL is the same but whose fixed values differ (a literal is a
    parameter, its value kept beside the SQL) share a group: each run keeps its own values."""
    one, two = (sa.select(sa.literal(n).label("n")) for n in (1, 2))
    rows = await asyncio.gather(*(db.fetch_one_grouped(statement, {}) for statement in (one, two, one, two, two)))
    assert [row["n"] for row in rows if row is not None] == [1, 2, 1, 2, 2]


async def test_a_read_whose_argument_cannot_be_sent_fails_alone(db: Database) -> None:
    """One run of a group has an argument the driver cannot encode (an integer past 64
    bits): that caller gets the error, the others their rows."""
    as_big = sa.select(sa.bindparam("n", type_=sa.BigInteger).label("n"))
    outcomes = await asyncio.gather(
        *(db.fetch_one_grouped(as_big, {"n": n}) for n in (1, 2, 2**70, 4)), return_exceptions=True
    )
    assert isinstance(outcomes[2], asyncpg.DataError if db.dialect == "postgresql" else OverflowError)
    assert [outcomes[n]["n"] for n in (0, 1, 3)] == [1, 2, 4]  # type: ignore[index]
