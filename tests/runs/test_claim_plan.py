"""The claim is served by the runs' partial indexes, whatever the history of finished runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aichats.services import runs
from aichats.storage import migrate
from aichats.storage.database import compile_statement


def test_sqlite_claim_plan_reads_only_active_runs(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    migrate.upgrade(f"sqlite:///{path}")
    compiled = compile_statement(runs._CLAIM, "sqlite")
    with sqlite3.connect(path) as connection:
        plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + compiled.sql, [0] * len(compiled.names))]
    assert any("candidate USING INDEX ix_runs_active_pk" in step for step in plan), plan
    # The probe for an older active run of the chat: one entry of the partial index, not the
    # chat's whole history (``ix_runs_chat_pk_pk``).
    assert any("older USING INDEX ix_runs_active_chat_pk_pk" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan  # the index gives the order
