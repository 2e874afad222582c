"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the same models
the handlers validate with (requests) and the tests check answers against (responses).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aichats import __version__
from aichats.api import schemas
from aichats.services.chats import MAX_QUERY_LENGTH, AgentIdentifier, ChatCreate, ChatOrder, ChatUpdate
from aichats.services.messages import MessageInput
from aichats.services.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from aichats.services.schedules import ScheduleInput, SchedulePreviewInput

_MODELS: tuple[type[BaseModel], ...] = (
    ChatCreate,
    ChatUpdate,
    MessageInput,
    schemas.Message,
    schemas.MessageList,
    schemas.File,
    ScheduleInput,
    schemas.Schedule,
    SchedulePreviewInput,
    schemas.SchedulePreview,
    schemas.Run,
    schemas.RunList,
    schemas.AiChat,
    schemas.AiChatList,
    schemas.Badges,
    schemas.Error,
    schemas.Health,
)

_ERRORS = {
    "400": "Malformed request (body is not a JSON object).",
    "401": "No API key, or an unknown or revoked one.",
    "403": "The API key lacks the permission this call needs.",
    "404": "No such AI chat (or file) for this user (other users' are never revealed).",
    "409": "The resource is not in a state that allows this (e.g. the message is not a failed reply).",
    "413": "Request body too large.",
    "422": "A field breaks the documented rules; nothing was changed.",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel] | dict[str, Any], description: str) -> dict[str, Any]:
    schema = model if isinstance(model, dict) else _ref(model)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    op_id: str,
    summary: str,
    scope: str,
    ok: dict[str, Any],
    errors: tuple[str, ...],
    tag: str = "AI chats",
    **extra: Any,
) -> dict[str, Any]:
    responses = dict(ok)
    for code in ("401", "403", *errors):
        responses[code] = _json(schemas.Error, _ERRORS[code])
    return {
        "operationId": op_id,
        "summary": summary,
        "description": f"{summary}\n\nRequired permission: `{scope}`.",
        "tags": [tag],
        "security": [{"bearer": []}],
        "responses": responses,
        **extra,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_CHAT_ID = {
    "name": "chat_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The AI chat's id (`aich_...`).",
}


@lru_cache
def _document() -> dict[str, Any]:
    _, components = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    idempotency = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
        "description": "Retrying with the same key and body returns the first answer and creates nothing new "
        "(for 24 hours by default); the same key with another body is refused with 422.",
    }
    page_size = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}
    list_params = [
        _query(
            "first", page_size, f"Page size, reading forwards (default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE})."
        ),
        _query("after", {"type": "string"}, "Cursor: return items after this one (`page_info.end_cursor`)."),
        _query("last", page_size, f"Page size, reading backwards from `before` (at most {MAX_PAGE_SIZE})."),
        _query("before", {"type": "string"}, "Cursor: return items before this one (`page_info.start_cursor`)."),
        _query("only_active_crons", {"type": "boolean"}, "Only chats whose schedule is active."),
        _query(
            "agent_identifier",
            {"type": "string", "enum": [a.value for a in AgentIdentifier]},
            "Only chats of this agent.",
        ),
        _query(
            "query",
            {"type": "string", "maxLength": MAX_QUERY_LENGTH},
            "Only chats whose title contains this text, ignoring case (`%`, `_` and `\\` match themselves). "
            "Empty: no filter. Combines with the other filters, both orders and the cursors.",
        ),
        _query(
            "order",
            {"type": "string", "enum": [o.value for o in ChatOrder], "default": "created_at"},
            "`created_at` (default): newest created first, a stable order for walking every page. "
            "`last_activity_at`: most recent message (or creation) first, for chat-list screens; "
            "this order moves while chats receive messages, so a walk may see a chat twice or miss one.",
        ),
    ]
    chat = _json(schemas.AiChat, "The AI chat.")
    paths = {
        "/ai_chats": {
            "get": _operation(
                "listAiChats",
                "Returns a paginated list of AI chat threads for the current authenticated user.",
                "ai_chat:read",
                {"200": _json(schemas.AiChatList, "One page of AI chats, newest first.")},
                ("422",),
                parameters=list_params,
            ),
            "post": _operation(
                "createAiChat",
                "Create a new AI chat thread and send the first message to the AI agent.",
                "ai_chat:create",
                {"201": chat},
                ("400", "413", "422"),
                parameters=[idempotency],
                requestBody={"required": True, "content": {"application/json": {"schema": _ref(ChatCreate)}}},
            ),
        },
        "/ai_chats/{chat_id}": {
            "parameters": [_CHAT_ID],
            "get": _operation("retrieveAiChat", "Retrieve an AI chat.", "ai_chat:read", {"200": chat}, ("404",)),
            "patch": _operation(
                "updateAiChat",
                "Update an AI chat: only the fields sent change; `updated_at` moves.",
                "ai_chat:update",
                {"200": chat},
                ("400", "404", "413", "422"),
                requestBody={"required": True, "content": {"application/json": {"schema": _ref(ChatUpdate)}}},
            ),
            "delete": _operation(
                "deleteAiChat",
                "Delete an AI chat: it leaves retrieve and list at once (its rows are kept).",
                "ai_chat:delete",
                {"200": _json({"type": "boolean", "const": True}, "`true`.")},
                ("404",),
            ),
        },
    }
    paging = [p for p in list_params if p["name"] in ("first", "after", "last", "before")]
    paths["/ai_chats/{chat_id}/messages"] = {
        "parameters": [_CHAT_ID],
        "get": _operation(
            "listMessages",
            "The chat's messages, oldest first (`last=N`: the newest N).",
            "ai_chat:read",
            {"200": _json(schemas.MessageList, "One page of messages.")},
            ("404", "422"),
            tag="Messages",
            parameters=paging,
        ),
        "post": _operation(
            "createMessage",
            "Send a message to the agent: stored at once (201), the agent's reply is queued.",
            "ai_chat:create",
            {"201": _json(schemas.Message, "The user's message.")},
            ("400", "404", "413", "422"),
            tag="Messages",
            requestBody={"required": True, "content": {"application/json": {"schema": _ref(MessageInput)}}},
        ),
    }
    paths["/ai_chats/{chat_id}/events"] = {
        "parameters": [_CHAT_ID],
        "get": _operation(
            "streamEvents",
            "Server-sent events of the chat: `message.created`, `message.delta` (`{message_id, delta, offset}`), "
            "`message.completed`, `message.failed`, `message.retried`, `chat.updated`. Each event's `id` orders it; "
            "reconnect with `Last-Event-ID` (or `?after=`) to receive exactly the events after it. Without it the "
            "stream replays the chat's events from the start, then follows new ones.",
            "ai_chat:read",
            {
                "200": {
                    "description": "An event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
            ("404", "422"),
            tag="Messages",
            parameters=[
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                _query(
                    "after",
                    {"oneOf": [{"type": "integer", "minimum": 0}, {"const": "latest"}]},
                    "Same as `Last-Event-ID`; `latest` starts at the chat's newest event (only what follows).",
                ),
            ],
        ),
    }
    paths["/ai_chats/{chat_id}/messages/{message_id}/retry"] = {
        "parameters": [
            _CHAT_ID,
            {
                "name": "message_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "The failed reply's id (`aimsg_...`).",
            },
        ],
        "post": _operation(
            "retryMessage",
            "Retry a failed reply: it goes back to `pending` (content, error and usage cleared) and the agent's turn "
            "is queued again (a `retry` run). The chat's stream sends `message.retried`, then the usual events as the "
            "reply streams. Only an assistant message whose status is `failed` can be retried (else 409).",
            "ai_chat:create",
            {"200": _json(schemas.Message, "The reply, `pending` again.")},
            ("404", "409"),
            tag="Messages",
        ),
    }
    schedule = _json(schemas.Schedule, "The schedule.")
    paths["/ai_chats/{chat_id}/schedule"] = {
        "parameters": [_CHAT_ID],
        "get": _operation(
            "getSchedule", "The chat's schedule.", "ai_chat:read", {"200": schedule}, ("404",), tag="Schedules"
        ),
        "put": _operation(
            "putSchedule",
            "Set the chat's schedule (one per chat): `prompt`, `timezone` (IANA, required) and one of `cron` "
            "(5 fields), `interval_seconds` or `run_at`; `active` (default true). Daylight saving neither skips "
            "nor doubles a run; missed runs fire once on recovery.",
            "ai_chat:update",
            {"200": schedule},
            ("400", "404", "422"),
            tag="Schedules",
            requestBody={"required": True, "content": {"application/json": {"schema": _ref(ScheduleInput)}}},
        ),
        "delete": _operation(
            "deleteSchedule",
            "Remove the chat's schedule.",
            "ai_chat:update",
            {"200": _json({"type": "boolean", "const": True}, "`true`.")},
            ("404",),
            tag="Schedules",
        ),
    }
    paths["/ai_chats/{chat_id}/schedule/run"] = {
        "parameters": [_CHAT_ID],
        "post": _operation(
            "runScheduleNow",
            "Run the schedule's prompt now (a `manual` run).",
            "ai_chat:update",
            {"201": _json(schemas.Run, "The queued run.")},
            ("404",),
            tag="Schedules",
        ),
    }
    paths["/schedule_preview"] = {
        "post": _operation(
            "previewSchedule",
            "What a schedule would do if saved now: its `description`, `next_run_times` (five; one for `run_at`; none "
            "if `active` is false) and `timezone`. Takes the body of `PUT /ai_chats/{id}/schedule` (the prompt may be "
            "left out) and refuses exactly what it refuses. Nothing is stored.",
            "ai_chat:read",
            {"200": _json(schemas.SchedulePreview, "The preview.")},
            ("400", "413", "422"),
            tag="Schedules",
            requestBody={"required": True, "content": {"application/json": {"schema": _ref(SchedulePreviewInput)}}},
        ),
    }
    paths["/ai_chats/{chat_id}/runs"] = {
        "parameters": [_CHAT_ID],
        "get": _operation(
            "listRuns",
            "The chat's runs (agent turns), newest first.",
            "ai_chat:read",
            {"200": _json(schemas.RunList, "One page of runs.")},
            ("404", "422"),
            tag="Schedules",
            parameters=[p for p in paging if p["name"] in ("first", "after")],
        ),
    }
    simple = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    paths["/ai_chats/{chat_id}/read"] = {
        "parameters": [_CHAT_ID],
        "post": _operation(
            "readAiChat",
            "The user has seen the chat: clear its unread badge and mark its notifications read.",
            "ai_chat:update",
            {"200": _json({"type": "boolean", "const": True}, "`true`.")},
            ("404",),
            tag="Notifications",
        ),
    }
    paths["/notifications"] = {
        "get": _operation(
            "listNotifications",
            "The user's notifications, newest first (`first`/`after`), with `unread_count`. A reply in a chat whose "
            "`notification_preference` is `all` notifies (and raises the chat's badge); muted chats never do.",
            "ai_chat:read",
            {"200": simple},
            ("422",),
            tag="Notifications",
            parameters=[p for p in paging if p["name"] in ("first", "after")],
        ),
    }
    paths["/notifications/read"] = {
        "post": _operation(
            "readNotifications",
            'Mark notifications read: `{"ids": [...]}`, or all with `{}` or no body.',
            "ai_chat:update",
            {"200": simple},
            ("400", "422"),
            tag="Notifications",
        ),
    }
    paths["/notifications/events"] = {
        "get": _operation(
            "streamNotifications",
            "Server-sent events of the user's notifications and badges: an event `badges` (data: the `Badges` schema) "
            "on connect, then again each time any of it changes (a new notification, notifications read, a chat "
            "read or deleted). No replay: each event is the whole current state.",
            "ai_chat:read",
            {
                "200": {
                    "description": "An event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
            (),
            tag="Notifications",
        ),
    }
    paths["/badges"] = {
        "get": _operation(
            "getBadges",
            'Unread replies: `{"total": n, "ai_chats": {"aich_...": n}}`.',
            "ai_chat:read",
            {"200": simple},
            (),
            tag="Notifications",
        ),
    }
    paths["/webhooks"] = {
        "get": _operation(
            "listWebhooks",
            "The user's webhooks (without secrets).",
            "ai_chat:read",
            {"200": simple},
            (),
            tag="Webhooks",
        ),
        "post": _operation(
            "createWebhook",
            "Subscribe a URL to events (`ai_chat.message.completed`, `ai_chat.run.failed`, "
            "`ai_chat.schedule.deactivated`, `notification.created`). Answers with the signing `secret`, once. "
            "Deliveries are signed per Standard Webhooks and retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.",
            "ai_chat:update",
            {"201": simple},
            ("400", "422"),
            tag="Webhooks",
        ),
    }
    paths["/webhooks/{webhook_id}"] = {
        "parameters": [{"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": _operation("getWebhook", "One webhook.", "ai_chat:read", {"200": simple}, ("404",), tag="Webhooks"),
        "delete": _operation(
            "deleteWebhook", "Delete a webhook.", "ai_chat:update", {"200": simple}, ("404",), tag="Webhooks"
        ),
    }
    paths["/webhooks/{webhook_id}/deliveries"] = {
        "parameters": [{"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": _operation(
            "listDeliveries",
            "The last 100 deliveries, newest first, each with every attempt.",
            "ai_chat:read",
            {"200": simple},
            ("404",),
            tag="Webhooks",
        ),
    }
    paths["/files"] = {
        "post": _operation(
            "uploadFile",
            "Upload a file (multipart field `file`) to attach to messages: text (inlined into the agent's "
            "context), JSON, PDF or images; 10 MiB by default.",
            "ai_chat:create",
            {"201": _json(schemas.File, "The stored file.")},
            ("400", "413", "422"),
            tag="Files",
            requestBody={
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    }
                },
            },
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aichats: the AI Chats API",
            "version": __version__,
            "description": 'Every error answers `{"error": {"type": "...", "message": "..."}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": components["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from `aichats keys create`."}
            },
        },
    }


def openapi_document(server_url: str) -> dict[str, Any]:
    return {**_document(), "servers": [{"url": server_url}]}
