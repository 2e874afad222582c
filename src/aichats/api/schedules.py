"""Handlers of a chat's schedule and its run history."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from aichats.api.auth import require
from aichats.api.inputs import page_request, read_json, validate
from aichats.api.responses import json_response
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.services import chats, schedules
from aichats.services.messages import MessageInput, MessageSource, add_user_message, decimal_tokens
from aichats.services.pagination import build_page, decode_cursor, encode_cursor
from aichats.storage.schema import runs


async def _chat(request: Request, scope: str) -> Any:
    principal = await require(request, scope)
    return await chats.get_chat(request.app.state.db, principal.user_id, request.path_params["chat_id"])


async def put(request: Request) -> Response:
    chat = await _chat(request, "ai_chat:update")
    data = validate(schedules.ScheduleInput, await read_json(request))
    minimum = request.app.state.settings.schedule_min_interval_seconds
    row = await schedules.put_schedule(request.app.state.db, chat["pk"], data, min_interval_seconds=minimum)
    return json_response(schedules.schedule_json(row, chat["id"]))


async def get(request: Request) -> Response:
    chat = await _chat(request, "ai_chat:read")
    row = await schedules.get_schedule(request.app.state.db, chat["pk"])
    return json_response(schedules.schedule_json(row, chat["id"]))


async def delete(request: Request) -> Response:
    chat = await _chat(request, "ai_chat:update")
    await schedules.delete_schedule(request.app.state.db, chat["pk"])
    return json_response(True)


async def run_now(request: Request) -> Response:
    """Queue the schedule's prompt now (a `manual` run), whether it is active or not."""
    chat = await _chat(request, "ai_chat:update")
    db = request.app.state.db
    row = await schedules.get_schedule(db, chat["pk"])
    now = now_ms()
    data = MessageInput.model_construct(
        message_text=schedules.render(row["prompt"], row["timezone"], now),
        message_attachments=[],
        message_source=MessageSource.schedule,
        suggestion_type=None,
    )
    async with db.transaction() as tx:
        await add_user_message(
            tx, user_id=chat["user_id"], chat_pk=chat["pk"], chat_id=chat["id"], data=data, now=now, trigger="manual"
        )
    latest = await db.fetch_one(_RUNS_NEWEST_FIRST, {"chat_pk": chat["pk"], "limit": 1})
    assert latest is not None
    return json_response(run_json(latest), status=201)


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


async def list_runs(request: Request) -> Response:
    """``GET /ai_chats/{id}/runs``: the chat's runs, newest first (``first``/``after``)."""
    chat = await _chat(request, "ai_chat:read")
    page = page_request(request)
    params: dict[str, Any] = {"chat_pk": chat["pk"], "limit": page.size + 1}
    statement = _RUNS_NEWEST_FIRST
    if page.after is not None:
        params["after_0"] = decode_cursor("r", page.after, 1, name="after")[0]
        statement = _RUNS_AFTER
    rows = await request.app.state.db.fetch_all(statement, params)
    result = build_page(
        rows,
        page.__class__(first=page.size),
        lambda row: encode_cursor("r", (row["pk"],)),
        more_before_window=page.after is not None,
        more_after_window=False,
    )
    return json_response({"data": [run_json(r) for r in result.items], "page_info": result.page_info.as_dict()})
