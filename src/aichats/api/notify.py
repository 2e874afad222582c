"""Handlers of notifications, badges and webhooks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from aichats.api import sse
from aichats.api.auth import require
from aichats.api.inputs import page_request, parse_object, read_body, read_json, validate
from aichats.api.responses import json_response
from aichats.services import chats, notifications, webhooks


class ReadInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str] | None = Field(None, max_length=notifications.MAX_IDS, description="Leave out to mark all read.")


async def list_notifications(request: Request) -> Response:
    principal = await require(request, "ai_chat:read")
    page, unread = await notifications.list_notifications(
        request.app.state.db, principal.user_id, page_request(request)
    )
    return json_response(
        {
            "data": [notifications.notification_json(r) for r in page.items],
            "page_info": page.page_info.as_dict(),
            "unread_count": unread,
        }
    )


async def read_notifications(request: Request) -> Response:
    principal = await require(request, "ai_chat:update")
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    data = validate(ReadInput, parse_object(body)) if body.strip() else ReadInput()
    db = request.app.state.db
    changed = await notifications.mark_read(db, principal.user_id, data.ids)
    unread = await notifications.unread_count(db, principal.user_id)
    return json_response({"marked_read": changed, "unread_count": unread})


async def badges(request: Request) -> Response:
    principal = await require(request, "ai_chat:read")
    per_chat = await notifications.badges(request.app.state.db, principal.user_id)
    return json_response({"total": sum(per_chat.values()), "ai_chats": per_chat})


async def stream(request: Request) -> Response:
    """``GET /notifications/events``: the user's unread count and badges (event ``badges``),
    sent on connect and again whenever they change."""
    principal = await require(request, "ai_chat:read")
    states: notifications.LiveStates = request.app.state.user_hub
    user_id = principal.user_id
    sent = 0  # versions start at 1

    async def read() -> AsyncIterator[ServerSentEvent]:
        """The user's shared state, if it moved since this stream last sent it."""
        nonlocal sent
        version, data = await states.get(user_id)
        if version != sent:
            sent = version
            yield ServerSentEvent(data=data, event="badges")

    return sse.follow(request, principal, states, user_id, read)


async def read_chat(request: Request) -> Response:
    principal = await require(request, "ai_chat:update")
    db = request.app.state.db
    chat = await chats.get_chat(db, principal.user_id, request.path_params["chat_id"])
    await notifications.read_chat(db, principal.user_id, chat["pk"])
    return json_response(True)


async def create_webhook(request: Request) -> Response:
    principal = await require(request, "ai_chat:update")
    data = validate(webhooks.WebhookInput, await read_json(request))
    allow = request.app.state.settings.webhooks_allow_private_urls
    created = await webhooks.create_webhook(request.app.state.db, principal.user_id, data, allow_private=allow)
    return json_response(created, status=201)


async def list_webhooks(request: Request) -> Response:
    principal = await require(request, "ai_chat:read")
    rows = await webhooks.list_webhooks(request.app.state.db, principal.user_id)
    return json_response({"data": [webhooks.webhook_json(r) for r in rows]})


async def _webhook(request: Request, scope: str) -> Any:
    principal = await require(request, scope)
    return principal, await webhooks.get_webhook(
        request.app.state.db, principal.user_id, request.path_params["webhook_id"]
    )


async def get_webhook(request: Request) -> Response:
    _, row = await _webhook(request, "ai_chat:read")
    return json_response(webhooks.webhook_json(row))


async def delete_webhook(request: Request) -> Response:
    principal, row = await _webhook(request, "ai_chat:update")
    await webhooks.delete_webhook(request.app.state.db, principal.user_id, row["id"])
    return json_response(True)


async def list_deliveries(request: Request) -> Response:
    _, row = await _webhook(request, "ai_chat:read")
    return json_response({"data": await webhooks.deliveries(request.app.state.db, row["pk"])})
