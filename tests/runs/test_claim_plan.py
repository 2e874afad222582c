"""The claim (of one run or many, of every agent or one) is served by the runs' partial
indexes, whatever the history of finished runs; the batched lease renewal by the primary key."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.services import runs, users
from aichats.services.chats import NewChat
from aichats.services.messages import NewMessage, create_chat
from aichats.storage import migrate
from aichats.storage.database import Database, asyncpg_dsn, compile_statement

CLAIMS = [runs._CLAIM, runs._PROBE, runs._CLAIM_OF_AGENT, runs._PROBE_OF_AGENT]
CLAIM_IDS = ["claim", "probe", "claim-of-agent", "probe-of-agent"]


@pytest.mark.parametrize("statement", CLAIMS, ids=CLAIM_IDS)
def test_sqlite_claim_plan_reads_only_active_runs(tmp_path: Path, statement: sa.Executable) -> None:
    path = tmp_path / "plans.db"
    migrate.upgrade(f"sqlite:///{path}")
    compiled = compile_statement(statement, "sqlite")
    with sqlite3.connect(path) as connection:
        plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + compiled.sql, [0] * len(compiled.names))]
    assert any("candidate USING INDEX ix_runs_active_pk" in step for step in plan), plan
    # The probe for an older active run of the chat: one entry of the partial index, not the
    # chat's whole history (``ix_runs_chat_pk_pk``).
    assert any("older USING INDEX ix_runs_active_chat_pk_pk" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan  # the index gives the order
    # The agent's chat: one row by its primary key, not a scan of the chats.
    assert not any(step.startswith("SCAN ai_chats") for step in plan), plan


def test_sqlite_renewal_plan_reads_runs_by_primary_key(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    migrate.upgrade(f"sqlite:///{path}")
    compiled = compile_statement(runs._RENEW, "sqlite")
    with sqlite3.connect(path) as connection:
        plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + compiled.sql, ["0", "running", "[]"])]
    assert any("runs USING INTEGER PRIMARY KEY" in step for step in plan), plan
    assert not any(step.startswith("SCAN runs") for step in plan), plan


# ---------------------------------------------------------------- PostgreSQL
HISTORY = 20_000  # finished runs, with statistics: enough for the planner to care which index it takes
CHATS = 50
ACTIVE_INDEXES = {"ix_runs_active_pk", "ix_runs_active_chat_pk_pk"}  # partial: queued and running runs only


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


async def generic_plan(connection: asyncpg.Connection, statement: sa.Executable, name: str) -> list[dict[str, Any]]:
    """The plan the server runs ``statement`` with, as a list of nodes: the pool forces
    generic plans (``plan_cache_mode``), so the parameters' values do not shape it."""
    compiled = compile_statement(statement, "postgresql")
    await connection.execute("SET plan_cache_mode = force_generic_plan")
    await connection.execute(f"PREPARE {name} AS {compiled.sql}")
    held = json.dumps([{"pk": n, "attempt": 1} for n in range(1, 257)])
    values = {
        "now": clock.now_ms(), "worker_id": "w", "lease_expires_at": 0, "status": "running", "limit": 256,
        "agent_identifier": "support", "held": held,
    }  # fmt: skip
    arguments = ", ".join(repr(value) for value in compiled.bind(values))
    (row,) = await connection.fetch(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({arguments})")
    return list(plan_nodes(json.loads(row[0])[0]["Plan"]))


def scans(nodes: list[dict[str, Any]], alias: str) -> list[tuple[str, str | None]]:
    """(node type, index) of each read of ``runs`` under ``alias``."""
    reads = [n for n in nodes if n.get("Alias") == alias and n["Node Type"] != "ModifyTable"]
    return [(n["Node Type"], n.get("Index Name")) for n in reads]


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite's plan is the test above
@pytest.mark.parametrize("backlog", [0, 200])
@pytest.mark.parametrize("of_agent", [False, True], ids=["every-agent", "one-agent"])
async def test_postgresql_claim_plan_reads_only_active_runs(
    db: Database, database_url: str, backlog: int, of_agent: bool
) -> None:
    """With a long history of finished runs (and statistics on it), the claim's candidate
    comes from the partial index on active runs, in order (no sort), and is locked
    (``LockRows``, for ``SKIP LOCKED``); nothing reads the history (no sequential scan).
    The claim takes up to ``limit`` runs (256 here); the runs it updates are found by
    their primary key. Claiming for one agent reads each candidate's chat by its primary key.

    The probe for an older active run of the chat: with a backlog of queued runs, one
    lookup in the partial index on (chat, pk) per candidate. With a handful of active
    runs (one per chat) the planner legitimately reads them all once from the partial
    index on pk and keeps them in memory (``Materialize``) instead: still active runs only.
    """
    for _ in range(CHATS):  # each with its queued run
        user_id = await users.create_user(db)
        async with db.transaction() as tx:
            await create_chat(tx, user_id, NewChat(NewMessage("hello")))
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        # Chats with nothing active, of both agents, as a deployment has (for the planner: a
        # handful of chats in all is read whole, whatever the index).
        await connection.execute(
            """
            INSERT INTO ai_chats (id, user_id, notification_preference, agent_identifier, message_count,
                                  blended_token_usage_micros, created_at, updated_at, activity_at)
            SELECT 'aich_old' || n, (SELECT min(user_id) FROM ai_chats), 'all',
                   CASE WHEN n % 2 = 0 THEN 'support' ELSE 'general' END, 0, 0, n, n, n
            FROM generate_series(1, $1) AS n
            """,
            HISTORY,
        )
        for status, count in (("completed", HISTORY), ("queued", backlog)):
            await connection.execute(
                """
                INSERT INTO runs (id, chat_pk, trigger, status, created_at, attempts)
                SELECT 'run_' || $1 || n, (SELECT min(pk) FROM ai_chats) + n % $2, 'message', $1, n, 0
                FROM generate_series(1, $3) AS n
                """,
                status,
                CHATS,
                count,
            )
        await connection.execute("ANALYZE runs")
        await connection.execute("ANALYZE ai_chats")
        claim = await generic_plan(connection, runs._CLAIM_OF_AGENT if of_agent else runs._CLAIM, "claim")
        probe = await generic_plan(connection, runs._PROBE_OF_AGENT if of_agent else runs._PROBE, "probe")
        renew = await generic_plan(connection, runs._RENEW, "renew")
    finally:
        await connection.close()

    for plan in (claim, probe):
        assert ("Index Scan", "ix_runs_active_pk") in scans(plan, "candidate"), plan
        older = scans(plan, "older")
        assert older and all(index in ACTIVE_INDEXES for _, index in older), plan
        if backlog:
            assert [index for _, index in older] == ["ix_runs_active_chat_pk_pk"], plan
        assert not [n for n in plan if n["Node Type"] in ("Seq Scan", "Sort", "Bitmap Heap Scan")], plan
        if of_agent:
            assert scans(plan, "ai_chats") == [("Index Scan", "pk_ai_chats")], plan
    assert any(n["Node Type"] == "LockRows" for n in claim), claim
    assert scans(claim, "runs") == [("Index Scan", "pk_runs")], claim  # the claimed runs, by pk
    assert not any(n["Node Type"] == "LockRows" for n in probe), probe  # a read: it locks nothing
    # The renewal of a process's 256 runs: each by its primary key, never a scan of the history.
    assert scans(renew, "runs") == [("Index Scan", "pk_runs")], renew
    assert not [n for n in renew if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")], renew
