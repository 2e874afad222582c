"""Operations of a chat's messages, its event stream, and file uploads."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from aichats import ids
from aichats.api import schemas, sse
from aichats.api.inputs import page_request, query_value, read_body
from aichats.api.models import MessageInput
from aichats.api.operations import FIRST_OR_LAST, Call, Stream, operation, paging, query
from aichats.api.responses import json_response, page_json
from aichats.clock import now_ms
from aichats.errors import BadRequest, Invalid
from aichats.services import chats, events, files, replies, tool_calls
from aichats.services.messages import add_user_message, calls_of_page, list_messages, message_json

TAG = "Messages"


@operation(
    "GET",
    "/ai_chats/{chat_id}/messages",
    "listMessages",
    summary="The chat's messages, oldest first (`last=N`: the newest N).",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.MessageList,
    response_description="One page of messages.",
    errors=(404, 422),
    parameters=paging(backwards=True),
    exclusive=FIRST_OR_LAST,
)
async def list_(call: Call) -> Response:
    chat = await call.chat()
    page = await list_messages(call.db, chat["pk"], page_request(call.request))
    calls = await calls_of_page(call.db, page)
    return json_response(page_json(page, lambda row: message_json(row, chat["id"], calls.get(row["pk"]))))


@operation(
    "POST",
    "/ai_chats/{chat_id}/messages",
    "createMessage",
    summary="Send a message to the agent: stored at once (201), the agent's reply is queued.",
    scope="ai_chat:create",
    tag=TAG,
    status=201,
    response=schemas.Message,
    response_description="The user's message.",
    errors=(400, 404, 413, 422),
    body=MessageInput,
    turn=True,
)
async def create(call: Call) -> Response:
    await call.check_budget()
    chat = await call.chat()
    async with call.db.transaction() as tx:
        message = await add_user_message(
            tx,
            user_id=call.principal.user_id,
            chat_pk=chat["pk"],
            chat_id=chat["id"],
            data=call.body.new_message(),
            now=now_ms(),
        )
    return json_response(message_json(message, chat["id"]), status=201)


@operation(
    "POST",
    "/ai_chats/{chat_id}/messages/{message_id}/retry",
    "retryMessage",
    summary="Write a reply again: a failed reply anywhere in the chat (Retry), or the chat's last reply once it "
    "ended (`completed` or `cancelled`: Regenerate). It goes back to `pending` (content, error, usage and tool "
    "calls cleared; what it cost stays on the chat's usage) and the agent's turn is queued again (a `retry` "
    "run). The chat's stream sends `message.retried`, then the usual events as the reply streams. Any other "
    "message: 409.",
    scope="ai_chat:create",
    tag=TAG,
    response=schemas.Message,
    response_description="The reply, `pending` again.",
    errors=(404, 409),
    turn=True,
)
async def retry(call: Call) -> Response:
    await call.check_budget()
    chat = await call.chat()
    async with call.db.transaction() as tx:
        reply = await replies.retry(
            tx, chat_pk=chat["pk"], chat_id=chat["id"], message_id=call.path("message_id"), now=now_ms()
        )
    return json_response(message_json(reply, chat["id"]))


@operation(
    "POST",
    "/ai_chats/{chat_id}/messages/{message_id}/cancel",
    "cancelMessage",
    summary="Stop a reply that is `pending`, `streaming` or `waiting`: it keeps what it wrote and ends "
    "`cancelled`; its worker stops at once, its tool calls that have not run are denied, and what its finished "
    "model calls used counts on the chat's usage. The stream sends `message.cancelled`. Any other message: 409.",
    scope="ai_chat:update",
    tag=TAG,
    response=schemas.Message,
    response_description="The reply, `cancelled`.",
    errors=(404, 409),
)
async def cancel(call: Call) -> Response:
    chat = await call.chat()
    async with call.db.transaction() as tx:
        reply = await replies.stop(
            tx, chat_pk=chat["pk"], chat_id=chat["id"], message_id=call.path("message_id"),
            blended_micros=call.settings.blended_micros,
        )  # fmt: skip
        calls = await tool_calls.of_messages(tx, [reply["pk"]])
    return json_response(message_json(reply, chat["id"], calls.get(reply["pk"])))


async def _decide(call: Call, approve: bool) -> Response:
    chat = await call.chat()
    async with call.db.transaction() as tx:
        row = await replies.decide(
            tx, chat_pk=chat["pk"], chat_id=chat["id"], tool_call_id=call.path("tool_call_id"), approve=approve
        )
    return json_response(tool_calls.tool_call_json(row))


@operation(
    "POST",
    "/ai_chats/{chat_id}/tool_calls/{tool_call_id}/approve",
    "approveToolCall",
    summary="Approve a tool call that is `awaiting_approval` (it changes things): once no call of its reply "
    "waits any more, the reply goes on and the call runs. Any other call: 409.",
    scope="ai_chat:update",
    tag=TAG,
    response=schemas.ToolCall,
    response_description="The tool call, `approved`.",
    errors=(404, 409),
)
async def approve(call: Call) -> Response:
    return await _decide(call, True)


@operation(
    "POST",
    "/ai_chats/{chat_id}/tool_calls/{tool_call_id}/deny",
    "denyToolCall",
    summary="Deny a tool call that is `awaiting_approval`: it does not run, and the model is told so (an error "
    "result) once no call of its reply waits any more. Any other call: 409.",
    scope="ai_chat:update",
    tag=TAG,
    response=schemas.ToolCall,
    response_description="The tool call, `denied`.",
    errors=(404, 409),
)
async def deny(call: Call) -> Response:
    return await _decide(call, False)


async def _last_event_id(call: Call, chat_pk: int) -> int:
    """Where the stream starts: after ``Last-Event-ID`` (a reconnect), else after ``?after=``,
    which is an event id, or ``latest`` (only what happens from now on).

    Checked before the stream starts, so that a bad value is a 422 and not a cut stream."""
    request = call.request
    raw = request.headers.get("last-event-id") or query_value(request, "after") or "0"
    if raw == "latest":
        return await events.latest_id(call.db, chat_pk)
    after = ids.parse_bigint(raw)
    if after is None:
        raise Invalid(
            f"Last-Event-ID (or ?after=) must be the id of an event from this stream (0 to {ids.MAX_BIGINT}), "
            "or `latest`"
        )
    return after


@operation(
    "GET",
    "/ai_chats/{chat_id}/events",
    "streamEvents",
    summary="Server-sent events of the chat: `message.created`, `message.delta` (`{message_id, delta, offset}`), "
    "`message.completed`, `message.failed`, `message.retried`, `chat.updated`. Each event's `id` orders it; "
    "reconnect with `Last-Event-ID` (or `?after=`) to receive exactly the events after it. Without it the "
    "stream replays the chat's events from the start, then follows new ones.",
    scope="ai_chat:read",
    tag=TAG,
    response=Stream(
        {
            "enum": [
                events.MESSAGE_CREATED,
                events.MESSAGE_DELTA,
                events.MESSAGE_COMPLETED,
                events.MESSAGE_FAILED,
                events.MESSAGE_RETRIED,
                events.CHAT_UPDATED,
            ]
        },
        with_id=True,
    ),
    response_description="The chat's events, each with its `id`.",
    errors=(404, 422),
    parameters=[
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": "^([0-9]{1,19}|latest)$"},
            "description": f"Start after this event `id`: ASCII digits, at most {ids.MAX_BIGINT}; or `latest`, "
            "the chat's newest event (only what follows). Anything else is a 422, before the stream starts.",
        },
        query(
            "after",
            {"oneOf": [{"type": "integer", "minimum": 0, "maximum": ids.MAX_BIGINT}, {"const": "latest"}]},
            "Same as `Last-Event-ID` (which wins when both are sent): an event `id` in ASCII digits, at most "
            f"{ids.MAX_BIGINT}, or `latest`; anything else is a 422.",
        ),
    ],
)
async def stream(call: Call) -> Response:
    """Server-sent events, replayed after ``Last-Event-ID``."""
    db = call.db
    chat = await chats.get_chat(db, call.principal.user_id, call.path("chat_id"))
    after = await _last_event_id(call, chat["pk"])

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

    return sse.follow(call.request, call.principal, call.request.app.state.event_hub, chat["pk"], read)


@operation(
    "POST",
    "/files",
    "uploadFile",
    summary="Upload a file (multipart field `file`) to attach to messages: text (inlined into the agent's "
    "context), JSON, PDF or images; 10 MiB by default.",
    scope="ai_chat:create",
    tag="Files",
    status=201,
    response=schemas.File,
    response_description="The stored file.",
    errors=(400, 413, 422),
    form={
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary"}},
        "required": ["file"],
    },
)
async def upload(call: Call) -> Response:
    """Multipart, field ``file``: store an upload for attachments. Its body is read here, under
    the larger limit of a file."""
    request, settings = call.request, call.settings
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
        call.db,
        files_dir=settings.files_dir,
        max_bytes=settings.max_file_bytes,
        user_id=call.principal.user_id,
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
