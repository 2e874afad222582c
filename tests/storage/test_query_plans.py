"""List queries are served by their indexes (keyset range scans, no sort, no full scan)."""

from __future__ import annotations

import sqlite3

import pytest

from aichats.services.chats import ChatOrder, _beyond_statement, _page_statement
from aichats.storage import migrate
from aichats.storage.database import compile_statement


@pytest.fixture
def sqlite_db(tmp_path) -> sqlite3.Connection:
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    migrate.upgrade(url)
    return sqlite3.connect(str(tmp_path / "plans.db"))


@pytest.mark.parametrize(
    "order, flt, index",
    [
        (ChatOrder.created_at, (False, False, False), "ix_ai_chats_user_pk_live"),
        (ChatOrder.created_at, (True, False, False), "ix_ai_chats_user_active_cron_pk"),
        (ChatOrder.created_at, (False, True, False), "ix_ai_chats_user_agent_pk_live"),
        (ChatOrder.last_activity_at, (False, False, False), "ix_ai_chats_user_activity_live"),
        # A title search filters the rows of the list's own index scan.
        (ChatOrder.created_at, (False, False, True), "ix_ai_chats_user_pk_live"),
        (ChatOrder.last_activity_at, (False, False, True), "ix_ai_chats_user_activity_live"),
    ],
)
@pytest.mark.parametrize(
    "after, before, backwards", [(False, False, False), (True, False, False), (False, True, True), (True, True, False)]
)
@pytest.mark.parametrize("versions", [False, True], ids=["chats", "versions"])
def test_sqlite_list_plans_use_the_index(sqlite_db, order, flt, index, after, before, backwards, versions) -> None:
    plan = _plan(sqlite_db, _page_statement(order, flt, after, before, backwards, versions))
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort step: the index gives the order


@pytest.mark.parametrize("after", [False, True])
def test_sqlite_version_pages_read_the_index_alone(sqlite_db, after) -> None:
    """The page of (pk, row_version) that a list reads first (api.ai_chats) needs no table
    page in the default order: what makes a first page cost little more than a retrieve
    (bench/README.md)."""
    plan = _plan(sqlite_db, _page_statement(ChatOrder.created_at, (False, False, False), after, False, False, True))
    assert "COVERING INDEX" in plan, plan


@pytest.mark.parametrize("side", ["after", "before"])
def test_sqlite_exists_probe_uses_the_index(sqlite_db, side) -> None:
    compiled = compile_statement(_beyond_statement(ChatOrder.created_at, (False, False, False), side), "sqlite")
    plan = " | ".join(
        row[3] for row in sqlite_db.execute("EXPLAIN QUERY PLAN " + compiled.sql, [0] * len(compiled.names))
    )
    assert "ix_ai_chats_user_pk_live" in plan, plan


def _plan(connection: sqlite3.Connection, statement: object) -> str:
    compiled = compile_statement(statement, "sqlite")  # type: ignore[arg-type]
    return " | ".join(
        row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + compiled.sql, [0] * len(compiled.names))
    )


def test_the_reads_made_every_second_or_scrape_use_partial_indexes(sqlite_db) -> None:
    """The scheduler's in-flight count (every pass, every process) and the due schedules'
    gauge (every /metrics scrape) read through partial indexes: a scan would grow with every
    run and schedule ever made."""
    from aichats.observability import gauges
    from aichats.services import runs

    assert "USING INDEX ix_runs_active_" in _plan(sqlite_db, runs._SCHEDULED_IN_FLIGHT)  # either partial index
    assert "ix_schedules_due" in _plan(sqlite_db, gauges._DUE_SCHEDULES)


def test_the_active_schedule_count_reads_the_active_cron_index(sqlite_db) -> None:
    """Regression: the cap's count (each schedule saved, ``GET /usage``) compared
    ``has_active_cron = 1``, which is not the partial index's own term: SQLite read every
    live chat of the user instead."""
    from aichats.services import schedules

    assert "ix_ai_chats_user_active_cron_pk" in _plan(sqlite_db, schedules._OTHER_ACTIVE)


def test_a_retrieve_finds_its_chat_by_id(sqlite_db) -> None:
    """Retrieve reads the chat's (pk, row_version) first, then, when its answer is not kept,
    the chat: both by the unique index on ``id``, never a scan of the user's chats (which
    SQLite's planner, without statistics, could pick for ``user_id = ?``)."""
    from aichats.services import chats

    for statement in (chats._GET_VERSION, chats._GET):
        plan = _plan(sqlite_db, statement)
        assert plan == "SEARCH ai_chats USING INDEX sqlite_autoindex_ai_chats_1 (id=?)", plan
