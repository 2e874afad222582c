"""Operations of notifications, badges and webhooks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent
from starlette.responses import Response

from aichats.api import schemas, sse
from aichats.api.inputs import page_request
from aichats.api.models import ReadInput, WebhookInput
from aichats.api.operations import TRUE, Call, Stream, operation, paging
from aichats.api.responses import json_response, page_json
from aichats.services import notifications, webhooks

NOTIFICATIONS = "Notifications"
WEBHOOKS = "Webhooks"


@operation(
    "POST",
    "/ai_chats/{chat_id}/read",
    "readAiChat",
    summary="The user has seen the chat: clear its unread badge and mark its notifications read.",
    scope="ai_chat:update",
    tag=NOTIFICATIONS,
    response=TRUE,
    response_description="`true`.",
    errors=(404,),
)
async def read_chat(call: Call) -> Response:
    chat = await call.chat()
    await notifications.read_chat(call.db, call.principal.user_id, chat["pk"])
    return json_response(True)


@operation(
    "GET",
    "/notifications",
    "listNotifications",
    summary="The user's notifications, newest first (`first`/`after`), with `unread_count`. A reply in a chat whose "
    "`notification_preference` is `all` notifies (and raises the chat's badge); muted chats never do.",
    scope="ai_chat:read",
    tag=NOTIFICATIONS,
    response=schemas.NotificationList,
    response_description="One page of notifications.",
    errors=(422,),
    parameters=paging(backwards=False),
)
async def list_notifications(call: Call) -> Response:
    page, unread = await notifications.list_notifications(call.db, call.principal.user_id, page_request(call.request))
    return json_response({**page_json(page, notifications.notification_json), "unread_count": unread})


@operation(
    "POST",
    "/notifications/read",
    "readNotifications",
    summary='Mark notifications read: `{"ids": [...]}`, or all with `{}` or no body.',
    scope="ai_chat:update",
    tag=NOTIFICATIONS,
    response=schemas.MarkedRead,
    response_description="How many were marked read.",
    errors=(400, 413, 422),
    body=ReadInput,
    body_required=False,
)
async def read_notifications(call: Call) -> Response:
    user_id = call.principal.user_id
    changed = await notifications.mark_read(call.db, user_id, call.body.ids)
    unread = await notifications.unread_count(call.db, user_id)
    return json_response({"marked_read": changed, "unread_count": unread})


@operation(
    "GET",
    "/notifications/events",
    "streamNotifications",
    summary="Server-sent events of the user's notifications and badges: an event `badges` (data: the `Badges` "
    "schema) on connect, then again each time any of it changes (a new notification, notifications read, a chat "
    "read or deleted). No replay: each event is the whole current state.",
    scope="ai_chat:read",
    tag=NOTIFICATIONS,
    response=Stream({"const": "badges"}, with_id=False),
    response_description="`badges` events (data: `Badges`).",
)
async def stream(call: Call) -> Response:
    """The user's unread count and badges (event ``badges``), sent on connect and again
    whenever they change."""
    states: notifications.LiveStates = call.request.app.state.user_hub
    user_id = call.principal.user_id
    sent = 0  # versions start at 1

    async def read() -> AsyncIterator[ServerSentEvent]:
        """The user's shared state, if it moved since this stream last sent it."""
        nonlocal sent
        version, data = await states.get(user_id)
        if version != sent:
            sent = version
            yield ServerSentEvent(data=data, event="badges")

    return sse.follow(call.request, call.principal, states, user_id, read)


@operation(
    "GET",
    "/badges",
    "getBadges",
    summary='Unread replies: `{"total": n, "ai_chats": {"aich_...": n}}`.',
    scope="ai_chat:read",
    tag=NOTIFICATIONS,
    response=schemas.BadgeCounts,
    response_description="The badges.",
)
async def badges(call: Call) -> Response:
    per_chat = await notifications.badges(call.db, call.principal.user_id)
    return json_response({"total": sum(per_chat.values()), "ai_chats": per_chat})


@operation(
    "GET",
    "/webhooks",
    "listWebhooks",
    summary="The user's webhooks (without secrets).",
    scope="ai_chat:read",
    tag=WEBHOOKS,
    response=schemas.WebhookList,
    response_description="The webhooks.",
)
async def list_webhooks(call: Call) -> Response:
    rows = await webhooks.list_webhooks(call.db, call.principal.user_id)
    return json_response({"data": [webhooks.webhook_json(r) for r in rows]})


@operation(
    "POST",
    "/webhooks",
    "createWebhook",
    summary="Subscribe a URL to events (`ai_chat.message.completed`, `ai_chat.run.failed`, "
    "`ai_chat.schedule.deactivated`, `notification.created`). Answers with the signing `secret`, once. "
    "Deliveries are signed per Standard Webhooks and retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.",
    scope="ai_chat:update",
    tag=WEBHOOKS,
    status=201,
    response=schemas.WebhookCreated,
    response_description="The webhook, with its secret.",
    errors=(400, 413, 422),
    body=WebhookInput,
)
async def create_webhook(call: Call) -> Response:
    allow = call.settings.webhooks_allow_private_urls
    created = await webhooks.create_webhook(
        call.db, call.principal.user_id, call.body.new_webhook(), allow_private=allow
    )
    return json_response(created, status=201)


async def _webhook(call: Call) -> Any:
    return await webhooks.get_webhook(call.db, call.principal.user_id, call.path("webhook_id"))


@operation(
    "GET",
    "/webhooks/{webhook_id}",
    "getWebhook",
    summary="One webhook.",
    scope="ai_chat:read",
    tag=WEBHOOKS,
    response=schemas.Webhook,
    response_description="The webhook.",
    errors=(404,),
)
async def get_webhook(call: Call) -> Response:
    return json_response(webhooks.webhook_json(await _webhook(call)))


@operation(
    "DELETE",
    "/webhooks/{webhook_id}",
    "deleteWebhook",
    summary="Delete a webhook.",
    scope="ai_chat:update",
    tag=WEBHOOKS,
    response=TRUE,
    response_description="`true`.",
    errors=(404,),
)
async def delete_webhook(call: Call) -> Response:
    row = await _webhook(call)
    await webhooks.delete_webhook(call.db, call.principal.user_id, row["id"])
    return json_response(True)


@operation(
    "GET",
    "/webhooks/{webhook_id}/deliveries",
    "listDeliveries",
    summary="The last 100 deliveries, newest first, each with every attempt.",
    scope="ai_chat:read",
    tag=WEBHOOKS,
    response=schemas.DeliveryList,
    response_description="The deliveries.",
    errors=(404,),
)
async def list_deliveries(call: Call) -> Response:
    row = await _webhook(call)
    return json_response({"data": await webhooks.deliveries(call.db, row["pk"])})
