"""Handlers of a chat's messages, its event stream, and file uploads."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from aichats import ids
from aichats.api import sse
from aichats.api.auth import require
from aichats.api.inputs import page_request, read_body, read_json, validate
from aichats.api.responses import json_response
from aichats.clock import now_ms
from aichats.errors import BadRequest, Invalid
from aichats.services import chats, events, files
from aichats.services.messages import MessageInput, add_user_message, list_messages, message_json, retry_reply


async def list_(request: Request) -> Response:
    principal = await require(request, "ai_chat:read")
    chat = await chats.get_chat(request.app.state.db, principal.user_id, request.path_params["chat_id"])
    page = await list_messages(request.app.state.db, chat["pk"], page_request(request))
    return json_response(
        {"data": [message_json(r, chat["id"]) for r in page.items], "page_info": page.page_info.as_dict()}
    )


async def create(request: Request) -> Response:
    principal = await require(request, "ai_chat:create")
    data = validate(MessageInput, await read_json(request))
    db = request.app.state.db
    chat = await chats.get_chat(db, principal.user_id, request.path_params["chat_id"])
    async with db.transaction() as tx:
        message = await add_user_message(
            tx, user_id=principal.user_id, chat_pk=chat["pk"], chat_id=chat["id"], data=data, now=now_ms()
        )
    return json_response(message_json(message, chat["id"]), status=201)


async def retry(request: Request) -> Response:
    """``POST /ai_chats/{id}/messages/{message_id}/retry``: queue a failed reply again."""
    principal = await require(request, "ai_chat:create")
    db = request.app.state.db
    chat = await chats.get_chat(db, principal.user_id, request.path_params["chat_id"])
    async with db.transaction() as tx:
        reply = await retry_reply(
            tx, chat_pk=chat["pk"], chat_id=chat["id"], message_id=request.path_params["message_id"], now=now_ms()
        )
    return json_response(message_json(reply, chat["id"]))


async def _last_event_id(request: Request, chat_pk: int) -> int:
    """Where the stream starts: after ``Last-Event-ID`` (a reconnect), else after ``?after=``,
    which is an event id, or ``latest`` (only what happens from now on).

    Checked before the stream starts, so that a bad value is a 422 and not a cut stream."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if raw == "latest":
        return await events.latest_id(request.app.state.db, chat_pk)
    after = ids.parse_bigint(raw)
    if after is None:
        raise Invalid(
            f"Last-Event-ID (or ?after=) must be the id of an event from this stream (0 to {ids.MAX_BIGINT}), "
            "or `latest`"
        )
    return after


async def stream(request: Request) -> Response:
    """``GET /ai_chats/{id}/events``: server-sent events, replayed after ``Last-Event-ID``."""
    principal = await require(request, "ai_chat:read")
    db = request.app.state.db
    chat = await chats.get_chat(db, principal.user_id, request.path_params["chat_id"])
    after = await _last_event_id(request, chat["pk"])

    async def read() -> AsyncIterator[ServerSentEvent]:
        """Everything after ``after``, page after page until caught up (a full page means
        more may follow: waiting for the next wakeup would stall a replay)."""
        nonlocal after
        while True:
            rows = await events.read_after(db, chat["pk"], after, events.PAGE_SIZE)
            for row in rows:
                after = row["pk"]
                yield ServerSentEvent(data=row["data"], event=row["type"], id=str(row["pk"]))
            if len(rows) < events.PAGE_SIZE:
                return

    return sse.follow(request, principal, request.app.state.event_hub, chat["pk"], read)


async def upload(request: Request) -> Response:
    """``POST /files`` (multipart, field ``file``): store an upload for attachments."""
    principal = await require(request, "ai_chat:create")
    settings = request.app.state.settings
    limit = settings.max_file_bytes + 64 * 1024  # the multipart envelope around the file
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("upload a file as multipart/form-data with the field 'file'")

    # The body was read under the size cap; the form parser reads it again from memory.
    form = await Request(request.scope, _receive_from(body)).form(max_files=1, max_fields=4)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise Invalid("the form needs a 'file' field holding the file")
    record = await files.save_upload(
        request.app.state.db,
        files_dir=settings.files_dir,
        max_bytes=settings.max_file_bytes,
        user_id=principal.user_id,
        filename=upload.filename,
        content_type=upload.content_type,
        data=await upload.read(),
    )
    return json_response(files.file_json(record), status=201)


def _receive_from(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
