"""Handlers of ``/api/v1/ai_chats``: authenticate, validate, call the service, serialise."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from aichats.api.auth import require
from aichats.api.inputs import page_request, query_bool, query_str, read_json, validate
from aichats.api.responses import json_response
from aichats.errors import Invalid
from aichats.services import chats, idempotency
from aichats.services.chats import (
    MAX_QUERY_LENGTH,
    AgentIdentifier,
    ChatCreate,
    ChatFilter,
    ChatOrder,
    ChatUpdate,
    chat_json,
)
from aichats.storage.database import Connection


async def create(request: Request) -> Response:
    principal = await require(request, "ai_chat:create")
    body = await read_json(request)
    data = validate(ChatCreate, body)
    db = request.app.state.db

    async def work(tx: Connection) -> idempotency.Answer:
        chat = await chats.create_chat(tx, principal.user_id, data)
        return idempotency.Answer(201, orjson.dumps(chat_json(chat)))

    key = request.headers.get("idempotency-key")
    if key is None:
        async with db.transaction() as tx:
            answer = await work(tx)
    else:
        answer = await idempotency.run_once(
            db,
            api_key_id=principal.key_id,
            key=idempotency.validate_key(key),
            fingerprint=idempotency.request_hash("POST", request.url.path, body),
            ttl_ms=request.app.state.settings.idempotency_ttl_seconds * 1000,
            work=work,
        )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


async def retrieve(request: Request) -> Response:
    principal = await require(request, "ai_chat:read")
    row = await chats.get_chat(request.app.state.db, principal.user_id, request.path_params["chat_id"])
    return json_response(chat_json(row))


async def update(request: Request) -> Response:
    principal = await require(request, "ai_chat:update")
    data = validate(ChatUpdate, await read_json(request))
    row = await chats.update_chat(request.app.state.db, principal.user_id, request.path_params["chat_id"], data)
    return json_response(chat_json(row))


async def delete(request: Request) -> Response:
    principal = await require(request, "ai_chat:delete")
    await chats.delete_chat(request.app.state.db, principal.user_id, request.path_params["chat_id"])
    return json_response(True)


def _enum(request: Request, name: str, enum: type, default: object = None) -> object:
    raw = query_str(request, name, 64)
    if raw is None:
        return default
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise Invalid(f"`{name}` must be one of: {allowed}") from None


async def list_(request: Request) -> Response:
    principal = await require(request, "ai_chat:read")
    page = page_request(request)
    flt = ChatFilter(
        only_active_crons=query_bool(request, "only_active_crons"),
        agent_identifier=_enum(request, "agent_identifier", AgentIdentifier),  # type: ignore[arg-type]
        query=query_str(request, "query", MAX_QUERY_LENGTH),
    )
    order = _enum(request, "order", ChatOrder, ChatOrder.created_at)
    result = await chats.list_chats(request.app.state.db, principal.user_id, page, order=order, flt=flt)  # type: ignore[arg-type]
    return json_response({"data": [chat_json(r) for r in result.items], "page_info": result.page_info.as_dict()})
