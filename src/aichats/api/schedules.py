"""Handlers of a chat's schedule and its run history."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from aichats.api.auth import require
from aichats.api.inputs import page_request, read_json, validate
from aichats.api.responses import json_response
from aichats.clock import now_ms
from aichats.services import chats, runs, schedules
from aichats.services.messages import MessageInput, MessageSource, add_user_message


async def _chat(request: Request, scope: str) -> Any:
    principal = await require(request, scope)
    return await chats.get_chat(request.app.state.db, principal.user_id, request.path_params["chat_id"])


async def put(request: Request) -> Response:
    chat = await _chat(request, "ai_chat:update")
    data = validate(schedules.ScheduleInput, await read_json(request))
    minimum = request.app.state.settings.schedule_min_interval_seconds
    row = await schedules.put_schedule(request.app.state.db, chat["pk"], data, min_interval_seconds=minimum)
    return json_response(schedules.schedule_json(row, chat["id"]))


async def preview(request: Request) -> Response:
    """``POST /schedule_preview``: a schedule's description and next times, before it is saved."""
    await require(request, "ai_chat:read")
    data = validate(schedules.SchedulePreviewInput, await read_json(request))
    minimum = request.app.state.settings.schedule_min_interval_seconds
    return json_response(schedules.preview(data, min_interval_seconds=minimum))


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
        message = await add_user_message(
            tx, user_id=chat["user_id"], chat_pk=chat["pk"], chat_id=chat["id"], data=data, now=now, trigger="manual"
        )
        queued = await runs.run_of_message(tx, chat["pk"], message["pk"])
    assert queued is not None
    return json_response(runs.run_json(queued), status=201)


async def list_runs(request: Request) -> Response:
    """``GET /ai_chats/{id}/runs``: the chat's runs, newest first (``first``/``after``)."""
    chat = await _chat(request, "ai_chat:read")
    result = await runs.list_runs(request.app.state.db, chat["pk"], page_request(request))
    return json_response({"data": [runs.run_json(r) for r in result.items], "page_info": result.page_info.as_dict()})
