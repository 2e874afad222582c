"""Operations of a chat's schedule and its run history."""

from __future__ import annotations

from starlette.responses import Response

from aichats.api import schemas
from aichats.api.inputs import page_request
from aichats.api.models import ScheduleInput, SchedulePreviewInput
from aichats.api.operations import TRUE, Call, operation, paging
from aichats.api.responses import json_response, page_json
from aichats.clock import now_ms
from aichats.services import runs, schedules
from aichats.services.messages import MessageSource, NewMessage, add_user_message

TAG = "Schedules"


@operation(
    "GET",
    "/ai_chats/{chat_id}/schedule",
    "getSchedule",
    summary="The chat's schedule.",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.Schedule,
    response_description="The schedule.",
    errors=(404,),
)
async def get(call: Call) -> Response:
    chat = await call.chat()
    row = await schedules.get_schedule(call.db, chat["pk"])
    return json_response(schedules.schedule_json(row, chat["id"]))


@operation(
    "PUT",
    "/ai_chats/{chat_id}/schedule",
    "putSchedule",
    summary="Set the chat's schedule (one per chat): `prompt`, `timezone` (IANA, required) and one of `cron` "
    "(5 fields), `interval_seconds` or `run_at`; `active` (default true). Daylight saving neither skips "
    "nor doubles a run; missed runs fire once on recovery. An active schedule counts against the user's "
    "active schedules, at most `AICHATS_MAX_SCHEDULES_PER_USER` (409 `schedule_limit_exceeded` past it).",
    scope="ai_chat:update",
    tag=TAG,
    response=schemas.Schedule,
    response_description="The schedule.",
    errors=(400, 404, 409, 413, 422),
    body=ScheduleInput,
)
async def put(call: Call) -> Response:
    chat = await call.chat()
    minimum, cap = call.settings.schedule_min_interval_seconds, call.settings.max_schedules_per_user
    row = await schedules.put_schedule(
        call.db, chat["pk"], call.body.spec(), min_interval_seconds=minimum, max_per_user=cap
    )
    return json_response(schedules.schedule_json(row, chat["id"]))


@operation(
    "DELETE",
    "/ai_chats/{chat_id}/schedule",
    "deleteSchedule",
    summary="Remove the chat's schedule.",
    scope="ai_chat:update",
    tag=TAG,
    response=TRUE,
    response_description="`true`.",
    errors=(404,),
)
async def delete(call: Call) -> Response:
    chat = await call.chat()
    await schedules.delete_schedule(call.db, chat["pk"])
    return json_response(True)


@operation(
    "POST",
    "/ai_chats/{chat_id}/schedule/run",
    "runScheduleNow",
    summary="Run the schedule's prompt now (a `manual` run).",
    scope="ai_chat:update",
    tag=TAG,
    status=201,
    response=schemas.Run,
    response_description="The queued run.",
    errors=(404,),
    turn=True,
)
async def run_now(call: Call) -> Response:
    """Queue the schedule's prompt now (a `manual` run), whether it is active or not."""
    await call.check_budget()
    chat = await call.chat()
    db = call.db
    row = await schedules.get_schedule(db, chat["pk"])
    now = now_ms()
    data = NewMessage(schedules.render(row["prompt"], row["timezone"], now), source=MessageSource.schedule)
    async with db.transaction() as tx:
        message = await add_user_message(
            tx, user_id=chat["user_id"], chat_pk=chat["pk"], chat_id=chat["id"], data=data, now=now, trigger="manual"
        )
        queued = await runs.run_of_message(tx, chat["pk"], message["pk"])
    assert queued is not None
    return json_response(runs.run_json(queued), status=201)


@operation(
    "POST",
    "/schedule_preview",
    "previewSchedule",
    summary="What a schedule would do if saved now: its `description`, `next_run_times` (five; one for `run_at`; "
    "none if `active` is false) and `timezone`. Takes the body of `PUT /ai_chats/{id}/schedule` (the prompt may be "
    "left out) and refuses exactly what it refuses. Nothing is stored.",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.SchedulePreview,
    response_description="The preview.",
    errors=(400, 413, 422),
    body=SchedulePreviewInput,
)
async def preview(call: Call) -> Response:
    """A schedule's description and next times, before it is saved."""
    minimum = call.settings.schedule_min_interval_seconds
    return json_response(schedules.preview(call.body.spec(), min_interval_seconds=minimum))


@operation(
    "GET",
    "/ai_chats/{chat_id}/runs",
    "listRuns",
    summary="The chat's runs (agent turns), newest first.",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.RunList,
    response_description="One page of runs.",
    errors=(404, 422),
    parameters=paging(backwards=False),
)
async def list_runs(call: Call) -> Response:
    """The chat's runs, newest first (``first``/``after``)."""
    chat = await call.chat()
    result = await runs.list_runs(call.db, chat["pk"], page_request(call.request))
    return json_response(page_json(result, runs.run_json))
