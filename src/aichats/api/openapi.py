"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the same models
the handlers validate with (requests) and the tests check answers against (responses).

Its one server is the relative URL ``/api/v1``: it resolves against wherever the
document was fetched from, so the document never repeats a request's ``Host`` header
(which a client or a proxy in front of the service controls) and is the same for all.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aichats import __version__
from aichats.api import schemas
from aichats.api.notify import ReadInput
from aichats.ids import MAX_BIGINT
from aichats.services import events
from aichats.services.chats import MAX_QUERY_LENGTH, AgentIdentifier, ChatCreate, ChatOrder, ChatUpdate
from aichats.services.messages import MessageInput
from aichats.services.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from aichats.services.schedules import ScheduleInput, SchedulePreviewInput
from aichats.services.webhooks import WebhookInput

API = "/api/v1"

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
    WebhookInput,
    ReadInput,
)

# A schedule has exactly one kind: of `cron`, `interval_seconds` and `run_at`, one is sent and not null
# (null counts as left out). The models check it in a validator, which JSON Schema cannot see: say it here.
_ONE_SCHEDULE_KIND = {
    "oneOf": [
        {"required": [kind], "properties": {kind: {"not": {"type": "null"}}}}
        for kind in ("cron", "interval_seconds", "run_at")
    ]
}

_ERRORS = {
    "400": "Malformed request (body is not a JSON object).",
    "401": "No API key, or an unknown or revoked one.",
    "403": "The API key lacks the permission this call needs.",
    "404": "No such AI chat (or file) for this user (other users' are never revealed).",
    "409": "The resource is not in a state that allows this (e.g. the message is not a failed reply).",
    "413": "Request body too large.",
    "422": "A field breaks the documented rules; nothing was changed.",
    "429": "Too many failed authentications from this client address: retry after `Retry-After` seconds.",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}

_DESCRIPTION = (
    'Every error answers `{"error": {"type": "...", "message": "..."}}`.\n\n'
    "No string may contain the NUL character (U+0000, `%00`), which neither database can store: a NUL in any "
    "string of a JSON body (at any depth, field names included) or in a query parameter is a 422 "
    "(`invalid_request`); a NUL in a path id is a 404, as any id that does not exist."
)


# Answers the handlers build as plain dicts (no model yet): their shape, so a client can rely on it.
_TIME = {"type": "string", "pattern": schemas.DATETIME}
_TIME_OR_NULL = {"type": ["string", "null"], "pattern": schemas.DATETIME}
_COUNT = {"type": "integer", "minimum": 0}
_PAGE_INFO = {"$ref": "#/components/schemas/PageInfo"}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


_NOTIFICATION = _object(
    {
        "id": {"type": "string", "pattern": "^ntf_[A-Za-z0-9]+$"},
        "kind": {"type": "string", "examples": ["ai_chat.reply"]},
        "ai_chat_id": {"type": "string", "pattern": "^aich_[A-Za-z0-9]+$"},
        "title": {"type": "string"},
        "body": {"type": "string"},
        "message_id": {"type": ["string", "null"]},
        "created_at": _TIME,
        "read_at": _TIME_OR_NULL,
    }
)
_WEBHOOK_FIELDS = {
    "id": {"type": "string", "pattern": "^wh_[A-Za-z0-9]+$"},
    "url": {"type": "string"},
    "events": {"type": "array", "items": {"type": "string"}},
    "created_at": _TIME,
}
_WEBHOOK = _object(_WEBHOOK_FIELDS)
_DELIVERY = _object(
    {
        "id": {"type": "string"},
        "event_type": {"type": "string"},
        "status": {"type": "string", "examples": ["pending", "delivered", "failed"]},
        "payload": {"type": "object"},
        "created_at": _TIME,
        "delivered_at": _TIME_OR_NULL,
        "next_attempt_at": _TIME_OR_NULL,
        "attempts": {
            "type": "array",
            "items": _object(
                {
                    "attempted_at": _TIME,
                    "status_code": {"type": ["integer", "null"]},
                    "error": {"type": ["string", "null"]},
                    "duration_ms": _COUNT,
                }
            ),
        },
    }
)


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
    for code in ("401", "403", "429", *errors):
        responses[code] = _json(schemas.Error, _ERRORS[code])
    responses["429"]["headers"] = _RETRY_AFTER
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


def _event_stream(event: dict[str, Any], description: str, *, with_id: bool) -> dict[str, Any]:
    """An event stream whose ``schema`` describes each event (OpenAPI 3.1 has no ``itemSchema``): the
    fields a client's EventSource gives it, ``data`` being JSON text."""
    properties: dict[str, Any] = {"event": event, "data": {"type": "string", "contentMediaType": "application/json"}}
    if with_id:
        properties["id"] = {"type": "string", "pattern": "^[0-9]+$", "description": "Resume after it with this."}
    schema = {"type": "object", "properties": properties, "required": sorted(properties)}
    return {"description": description, "content": {"text/event-stream": {"schema": schema}}}


def _body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(model)}}}


_PAGE_SIZE = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}
# OpenAPI cannot relate two parameters: the operations that take both say so here (and in the
# parameters' descriptions); the server answers 422 to both together.
_EXCLUSIVE_PAGING = {"x-mutually-exclusive-parameters": [["first", "last"]]}


def _paging(*, backwards: bool) -> list[dict[str, Any]]:
    """The paging query parameters, flat as in the reference API: ``first``/``after`` and, for the
    lists that also read ``backwards``, ``last``/``before`` (which ``first`` excludes)."""
    forwards = f"Page size, reading forwards (default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE})."
    parameters = [
        _query("first", _PAGE_SIZE, forwards + (" Not with `last`." if backwards else "")),
        _query("after", {"type": "string"}, "Cursor: return items after this one (`page_info.end_cursor`)."),
    ]
    if backwards:
        parameters += [
            _query(
                "last",
                _PAGE_SIZE,
                f"Page size, reading backwards from `before` (at most {MAX_PAGE_SIZE}). Not with `first`.",
            ),
            _query("before", {"type": "string"}, "Cursor: return items before this one (`page_info.start_cursor`)."),
        ]
    return parameters


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
    forwards = _paging(backwards=False)
    list_params = [
        *_paging(backwards=True),
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
                **_EXCLUSIVE_PAGING,
            ),
            "post": _operation(
                "createAiChat",
                "Create a new AI chat thread and send the first message to the AI agent.",
                "ai_chat:create",
                {"201": chat},
                ("400", "404", "413", "422"),
                parameters=[idempotency],
                requestBody=_body(ChatCreate),
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
    paths["/ai_chats/{chat_id}/messages"] = {
        "parameters": [_CHAT_ID],
        "get": _operation(
            "listMessages",
            "The chat's messages, oldest first (`last=N`: the newest N).",
            "ai_chat:read",
            {"200": _json(schemas.MessageList, "One page of messages.")},
            ("404", "422"),
            tag="Messages",
            parameters=_paging(backwards=True),
            **_EXCLUSIVE_PAGING,
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
                "200": _event_stream(
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
                    "The chat's events, each with its `id`.",
                    with_id=True,
                )
            },
            ("404", "422"),
            tag="Messages",
            parameters=[
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^([0-9]{1,19}|latest)$"},
                    "description": f"Start after this event `id`: ASCII digits, at most {MAX_BIGINT}; or `latest`, "
                    "the chat's newest event (only what follows). Anything else is a 422, before the stream starts.",
                },
                _query(
                    "after",
                    {"oneOf": [{"type": "integer", "minimum": 0, "maximum": MAX_BIGINT}, {"const": "latest"}]},
                    "Same as `Last-Event-ID` (which wins when both are sent): an event `id` in ASCII digits, at most "
                    f"{MAX_BIGINT}, or `latest`; anything else is a 422.",
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
            ("400", "404", "413", "422"),
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
            parameters=forwards,
        ),
    }
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
            {
                "200": _json(
                    _object(
                        {
                            "data": {"type": "array", "items": _NOTIFICATION},
                            "page_info": _PAGE_INFO,
                            "unread_count": _COUNT,
                        }
                    ),
                    "One page of notifications.",
                )
            },
            ("422",),
            tag="Notifications",
            parameters=forwards,
        ),
    }
    paths["/notifications/read"] = {
        "post": _operation(
            "readNotifications",
            'Mark notifications read: `{"ids": [...]}`, or all with `{}` or no body.',
            "ai_chat:update",
            {"200": _json(_object({"marked_read": _COUNT, "unread_count": _COUNT}), "How many were marked read.")},
            ("400", "413", "422"),
            tag="Notifications",
            requestBody=_body(ReadInput, required=False),
        ),
    }
    paths["/notifications/events"] = {
        "get": _operation(
            "streamNotifications",
            "Server-sent events of the user's notifications and badges: an event `badges` (data: the `Badges` schema) "
            "on connect, then again each time any of it changes (a new notification, notifications read, a chat "
            "read or deleted). No replay: each event is the whole current state.",
            "ai_chat:read",
            {"200": _event_stream({"const": "badges"}, "`badges` events (data: `Badges`).", with_id=False)},
            (),
            tag="Notifications",
        ),
    }
    paths["/badges"] = {
        "get": _operation(
            "getBadges",
            'Unread replies: `{"total": n, "ai_chats": {"aich_...": n}}`.',
            "ai_chat:read",
            {
                "200": _json(
                    _object({"total": _COUNT, "ai_chats": {"type": "object", "additionalProperties": _COUNT}}),
                    "The badges.",
                )
            },
            (),
            tag="Notifications",
        ),
    }
    paths["/webhooks"] = {
        "get": _operation(
            "listWebhooks",
            "The user's webhooks (without secrets).",
            "ai_chat:read",
            {"200": _json(_object({"data": {"type": "array", "items": _WEBHOOK}}), "The webhooks.")},
            (),
            tag="Webhooks",
        ),
        "post": _operation(
            "createWebhook",
            "Subscribe a URL to events (`ai_chat.message.completed`, `ai_chat.run.failed`, "
            "`ai_chat.schedule.deactivated`, `notification.created`). Answers with the signing `secret`, once. "
            "Deliveries are signed per Standard Webhooks and retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.",
            "ai_chat:update",
            {"201": _json(_object({**_WEBHOOK_FIELDS, "secret": {"type": "string"}}), "The webhook, with its secret.")},
            ("400", "413", "422"),
            tag="Webhooks",
            requestBody=_body(WebhookInput),
        ),
    }
    paths["/webhooks/{webhook_id}"] = {
        "parameters": [{"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": _operation(
            "getWebhook",
            "One webhook.",
            "ai_chat:read",
            {"200": _json(_WEBHOOK, "The webhook.")},
            ("404",),
            tag="Webhooks",
        ),
        "delete": _operation(
            "deleteWebhook",
            "Delete a webhook.",
            "ai_chat:update",
            {"200": _json({"type": "boolean", "const": True}, "`true`.")},
            ("404",),
            tag="Webhooks",
        ),
    }
    paths["/webhooks/{webhook_id}/deliveries"] = {
        "parameters": [{"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": _operation(
            "listDeliveries",
            "The last 100 deliveries, newest first, each with every attempt.",
            "ai_chat:read",
            {"200": _json(_object({"data": {"type": "array", "items": _DELIVERY}}), "The deliveries.")},
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
    for name in ("ScheduleInput", "SchedulePreviewInput"):
        components["$defs"][name].update(_ONE_SCHEDULE_KIND)
        components["$defs"][name]["properties"]["timezone"].setdefault("examples", ["Europe/Paris", "UTC"])
    return {
        "openapi": "3.1.0",
        "servers": [{"url": API}],
        "info": {
            "title": "aichats: the AI Chats API",
            "version": __version__,
            "description": _DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": components["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from `aichats keys create`."}
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    return _document()
