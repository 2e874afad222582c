"""A chat's run history: every agent turn, why it ran, when, and what it cost."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from aichats.clock import isoformat_ms, isoformat_ms_or_none
from aichats.services.messages import decimal_tokens
from aichats.services.pagination import Page, PageRequest, newest_first
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import runs

_r = runs.c
_RUN_COLUMNS = (
    _r.pk, _r.id, _r.trigger, _r.status, _r.scheduled_for, _r.created_at, _r.started_at, _r.finished_at, _r.error,
    _r.model, _r.input_tokens, _r.output_tokens, _r.blended_tokens_micros,
)  # fmt: skip
_RUNS_NEWEST_FIRST = (
    sa.select(*_RUN_COLUMNS)
    .where(_r.chat_pk == sa.bindparam("chat_pk"))
    .order_by(_r.pk.desc())
    .limit(sa.bindparam("limit"))
)
_RUNS_AFTER = (
    sa.select(*_RUN_COLUMNS)
    .where(_r.chat_pk == sa.bindparam("chat_pk"), _r.pk < sa.bindparam("after_0"))
    .order_by(_r.pk.desc())
    .limit(sa.bindparam("limit"))
)


def run_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "trigger": row["trigger"],
        "status": row["status"],
        "scheduled_for": isoformat_ms_or_none(row["scheduled_for"]),
        "created_at": isoformat_ms(row["created_at"]),
        "started_at": isoformat_ms_or_none(row["started_at"]),
        "finished_at": isoformat_ms_or_none(row["finished_at"]),
        "error": row["error"],
        "model": row["model"],
        "usage": {
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "blended_tokens": decimal_tokens(row["blended_tokens_micros"]),
        },
    }


async def list_runs(db: Database, chat_pk: int, page: PageRequest) -> Page[Row]:
    """The chat's runs, newest first (``first``/``after``)."""
    return await newest_first(db, _RUNS_NEWEST_FIRST, _RUNS_AFTER, {"chat_pk": chat_pk}, page, "r")


_RUN_OF_MESSAGE = sa.select(*_RUN_COLUMNS).where(
    _r.chat_pk == sa.bindparam("chat_pk"), _r.user_message_pk == sa.bindparam("message_pk")
)


async def run_of_message(tx: Connection, chat_pk: int, message_pk: int) -> Row | None:
    """The run queued for a user message, read in the transaction that queued it: "the
    latest run" read afterwards may already be another request's."""
    return await tx.fetch_one(_RUN_OF_MESSAGE, {"chat_pk": chat_pk, "message_pk": message_pk})
