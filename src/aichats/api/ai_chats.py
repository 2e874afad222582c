"""Operations of ``/api/v1/ai_chats``: call the service, serialise."""

from __future__ import annotations

from operator import itemgetter
from typing import TypeVar

import orjson
from starlette.responses import Response

from aichats.api import schemas
from aichats.api.inputs import page_request, query_bool, query_str
from aichats.api.models import ChatCreate, ChatToolsInput, ChatUpdate
from aichats.api.operations import FIRST_OR_LAST, IDEMPOTENCY_KEY, TRUE, Call, operation, paging, query
from aichats.api.responses import JSONMemo, json_response, page_json
from aichats.errors import Invalid
from aichats.services import chats, idempotency, messages
from aichats.services.chats import (
    CHAT_ANSWER_COLUMNS,
    MAX_QUERY_LENGTH,
    AgentIdentifier,
    ChatFilter,
    ChatOrder,
    chat_json,
)
from aichats.storage.database import Connection

TAG = "AI chats"
E = TypeVar("E", AgentIdentifier, ChatOrder)

# The chats that retrieve and list answer with (rows of CHAT_ANSWER_COLUMNS), kept serialised
# by (pk, row_version), which moves whenever a value that chat_json shows changes (migration
# 0010): room for the first pages of a thousand users, at about 0.5 KB a chat
# (docs/deployment.md). One per app: a pk names a chat of one database.
CHAT_MEMO_SIZE = 32_768
_COLUMN_NAMES = [column.key for column in CHAT_ANSWER_COLUMNS]
_ANSWER_KEY = itemgetter(_COLUMN_NAMES.index("pk"), _COLUMN_NAMES.index("row_version"))


def chat_answers() -> JSONMemo:
    """A new memo of chats' answers (``app.state.chat_answers``)."""
    return JSONMemo(chat_json, _ANSWER_KEY, CHAT_MEMO_SIZE)


def _answers(call: Call) -> JSONMemo:
    memo: JSONMemo = call.request.app.state.chat_answers
    return memo


@operation(
    "POST",
    "/ai_chats",
    "createAiChat",
    summary="Create a new AI chat thread and send the first message to the AI agent.",
    scope="ai_chat:create",
    tag=TAG,
    status=201,
    response=schemas.AiChat,
    response_description="The AI chat.",
    errors=(400, 404, 413, 422),
    body=ChatCreate,
    parameters=[IDEMPOTENCY_KEY],
    turn=True,
)
async def create(call: Call) -> Response:
    data, principal = call.body.new_chat(), call.principal
    key = call.request.headers.get("idempotency-key")
    if key is None:
        await call.check_budget()
        chat = await messages.create_chat_alone(call.db, principal.user_id, data)
        return json_response(chat_json(chat), 201)

    async def work(tx: Connection) -> idempotency.Answer:
        # Only for a create that is not a replay (a replay answers as the first did), on the
        # open transaction: a second connection while holding one could exhaust the pool.
        await call.check_budget(tx)
        chat = await messages.create_chat(tx, principal.user_id, data)
        return idempotency.Answer(201, orjson.dumps(chat_json(chat)))

    answer = await idempotency.run_once(
        call.db,
        api_key_id=principal.key_id,
        key=idempotency.validate_key(key),
        fingerprint=idempotency.request_hash("POST", call.request.url.path, call.json),
        ttl_ms=call.settings.idempotency_ttl_seconds * 1000,
        work=work,
    )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


@operation(
    "GET",
    "/ai_chats/{chat_id}",
    "retrieveAiChat",
    summary="Retrieve an AI chat.",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.AiChat,
    response_description="The AI chat.",
    errors=(404,),
)
async def retrieve(call: Call) -> Response:
    # The chat's (pk, row_version) first: when its answer is kept, that is all it reads.
    memo = _answers(call)
    kept = memo.get(await chats.chat_version(call.db, call.principal.user_id, call.path("chat_id")))
    return json_response(kept if kept is not None else memo(await call.chat()))


@operation(
    "PATCH",
    "/ai_chats/{chat_id}",
    "updateAiChat",
    summary="Update an AI chat: only the fields sent change; `updated_at` moves.",
    scope="ai_chat:update",
    tag=TAG,
    response=schemas.AiChat,
    response_description="The AI chat.",
    errors=(400, 404, 413, 422),
    body=ChatUpdate,
)
async def update(call: Call) -> Response:
    row = await chats.update_chat(call.db, call.principal.user_id, call.path("chat_id"), call.body.changes())
    return json_response(chat_json(row))


@operation(
    "GET",
    "/ai_chats/{chat_id}/tools",
    "getChatTools",
    summary="The tools the chat's agent may use (null: every tool of the user). docs/tools.md.",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.ChatTools,
    response_description="The chat's tool choice.",
    errors=(404,),
)
async def get_tools(call: Call) -> Response:
    return json_response(chats.chat_tools_json(await call.chat()))


@operation(
    "PUT",
    "/ai_chats/{chat_id}/tools",
    "putChatTools",
    summary="Choose the tools the chat's agent may use: `null` for every tool of the user, else names of tool "
    "servers, tools (`server__tool`), `builtin` or built-in tools; `[]` for none.",
    scope="ai_chat:update",
    tag=TAG,
    response=schemas.ChatTools,
    response_description="The chat's tool choice.",
    errors=(400, 404, 413, 422),
    body=ChatToolsInput,
)
async def put_tools(call: Call) -> Response:
    row = await chats.update_chat(call.db, call.principal.user_id, call.path("chat_id"), call.body.changes())
    return json_response(chats.chat_tools_json(row))


@operation(
    "DELETE",
    "/ai_chats/{chat_id}",
    "deleteAiChat",
    summary="Delete an AI chat: it leaves retrieve and list at once (its rows are kept).",
    scope="ai_chat:delete",
    tag=TAG,
    response=TRUE,
    response_description="`true`.",
    errors=(404,),
)
async def delete(call: Call) -> Response:
    await chats.delete_chat(call.db, call.principal.user_id, call.path("chat_id"))
    return json_response(True)


def _enum(call: Call, name: str, enum: type[E]) -> E | None:
    raw = query_str(call.request, name, 64)
    if raw is None:
        return None
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise Invalid(f"`{name}` must be one of: {allowed}") from None


@operation(
    "GET",
    "/ai_chats",
    "listAiChats",
    summary="Returns a paginated list of AI chat threads for the current authenticated user.",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.AiChatList,
    response_description="One page of AI chats, newest first.",
    errors=(422,),
    parameters=[
        *paging(backwards=True),
        query("only_active_crons", {"type": "boolean"}, "Only chats whose schedule is active."),
        query(
            "agent_identifier",
            {"type": "string", "enum": [a.value for a in AgentIdentifier]},
            "Only chats of this agent.",
        ),
        query(
            "query",
            {"type": "string", "maxLength": MAX_QUERY_LENGTH},
            "Only chats whose title contains this text, ignoring case (`%`, `_` and `\\` match themselves). "
            "Empty: no filter. Combines with the other filters, both orders and the cursors.",
        ),
        query(
            "order",
            {"type": "string", "enum": [o.value for o in ChatOrder], "default": "created_at"},
            "`created_at` (default): newest created first, a stable order for walking every page. "
            "`last_activity_at`: most recent message (or creation) first, for chat-list screens; "
            "this order moves while chats receive messages, so a walk may see a chat twice or miss one.",
        ),
    ],
    exclusive=FIRST_OR_LAST,
)
async def list_(call: Call) -> Response:
    request = call.request
    page = page_request(request)
    flt = ChatFilter(
        only_active_crons=query_bool(request, "only_active_crons"),
        agent_identifier=_enum(call, "agent_identifier", AgentIdentifier),
        query=query_str(request, "query", MAX_QUERY_LENGTH),
    )
    order = _enum(call, "order", ChatOrder) or ChatOrder.created_at
    memo, user_id = _answers(call), call.principal.user_id
    # The page's (pk, row_version) first: when every chat on it is kept, that is all it reads.
    versions = await chats.list_chats(call.db, user_id, page, order=order, flt=flt, versions=True)
    kept = memo.known((row[0], row[1]) for row in versions.items)
    if kept is not None:
        return json_response({"data": kept, "page_info": versions.page_info.as_dict()})
    return json_response(page_json(await chats.list_chats(call.db, user_id, page, order=order, flt=flt), memo))
