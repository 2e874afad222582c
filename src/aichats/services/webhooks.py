"""Outbound webhooks, signed per Standard Webhooks and delivered from an outbox.

``enqueue`` writes one delivery row per subscribed webhook inside the transaction of the
event itself, so a crash loses neither. Senders claim due rows (``FOR UPDATE SKIP
LOCKED``, with a one-minute lease while the request is in flight), POST them signed with
``standardwebhooks`` (headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``)
and retry failures on a schedule like Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
URLs follow :mod:`aichats.outbound`'s rule: checked at creation (422), and again by the
sender's connections, which connect to the address they checked. Private, loopback and
link-local addresses are refused unless the operator allows them
(``AICHATS_WEBHOOKS_ALLOW_PRIVATE_URLS``). Any failure of an attempt, whatever raised it, is
recorded and counted, so no delivery is tried more than ``len(retry_seconds) + 1`` times.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, cast

import httpx2
import orjson
import sqlalchemy as sa
from standardwebhooks import Webhook

from aichats import ids, outbound
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.errors import Invalid, NotFound
from aichats.observability import metrics
from aichats.services.sql import json_records
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import webhook_attempts, webhook_deliveries, webhooks

EVENTS = (
    "ai_chat.message.completed",
    "ai_chat.run.failed",
    "ai_chat.schedule.deactivated",
    "notification.created",
)
CHANNEL = "aichats_webhooks"
SEND_LEASE_MS = 60_000
TIMEOUT_SECONDS = 10.0

_w = webhooks.c
_d = webhook_deliveries.c
_a = webhook_attempts.c


@dataclass(frozen=True, slots=True)
class NewWebhook:
    """A URL to subscribe to some of :data:`EVENTS` (checked by :func:`create_webhook`)."""

    url: str
    events: tuple[str, ...]


def policy(*, allow_private: bool) -> outbound.Policy:
    """Webhooks' outbound policy: private addresses only if ``AICHATS_WEBHOOKS_ALLOW_PRIVATE_URLS``."""
    return outbound.Policy(allow_private=allow_private, setting="AICHATS_WEBHOOKS_ALLOW_PRIVATE_URLS")


def sender(*, allow_private: bool) -> httpx2.AsyncClient:
    """The HTTP client :func:`deliver_one` needs: each connection checked by the outbound rule."""
    return outbound.async_client(policy(allow_private=allow_private))


_INSERT = sa.insert(webhooks).values(
    {c: sa.bindparam(c) for c in ("id", "user_id", "url", "events", "secret", "created_at")}
)


class WebhookRow(TypedDict):
    """A webhook as its owner reads it (typed, not copied: see ``chats.ChatRow``)."""

    pk: int
    id: str
    url: str
    events: str  # comma-separated
    created_at: int


_OWNED = sa.select(_w.pk, _w.id, _w.url, _w.events, _w.created_at).where(
    _w.id == sa.bindparam("webhook_id"), _w.user_id == sa.bindparam("user_id"), _w.deleted_at.is_(None)
)
_LIST = (
    sa.select(_w.pk, _w.id, _w.url, _w.events, _w.created_at)
    .where(_w.user_id == sa.bindparam("user_id"), _w.deleted_at.is_(None))
    .order_by(_w.pk)
)
_SUBSCRIBED = sa.select(_w.pk, _w.events).where(_w.user_id == sa.bindparam("user_id"), _w.deleted_at.is_(None))
_DELETE = sa.update(webhooks).where(_w.pk == sa.bindparam("pk")).values(deleted_at=sa.bindparam("now"))
# All of an event's deliveries in one statement: their ids and webhooks as one JSON array.
_new = json_records("deliveries", id=sa.Text(), webhook_pk=sa.BigInteger())
_ENQUEUE = sa.insert(webhook_deliveries).from_select(
    ["id", "webhook_pk", "event_type", "payload", "status", "next_attempt_at", "created_at"],
    sa.select(
        _new.c.id,
        _new.c.webhook_pk,
        sa.bindparam("event_type", type_=sa.String),
        sa.bindparam("payload", type_=sa.Text),
        sa.literal_column("'pending'"),
        sa.bindparam("now", type_=sa.BigInteger),
        sa.bindparam("now", type_=sa.BigInteger),
    ),
)


def webhook_json(row: Any, secret: str | None = None) -> dict[str, Any]:
    body = {
        "id": row["id"],
        "url": row["url"],
        "events": row["events"].split(","),
        "created_at": isoformat_ms(row["created_at"]),
    }
    if secret is not None:
        body["secret"] = secret
    return body


async def create_webhook(db: Database, user_id: str, data: NewWebhook, *, allow_private: bool) -> dict[str, Any]:
    unknown = [e for e in data.events if e not in EVENTS]
    if unknown:
        raise Invalid(f"unknown event(s) {', '.join(unknown)}; known: {', '.join(EVENTS)}")
    await outbound.check_url(data.url, policy(allow_private=allow_private))
    url = data.url
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    row = {
        "id": ids.new_id("wh"),
        "user_id": user_id,
        "url": url,
        "events": ",".join(dict.fromkeys(data.events)),
        "secret": secret,
        "created_at": now_ms(),
    }
    async with db.transaction() as tx:
        await tx.execute(_INSERT, row)
    return webhook_json(row, secret)


async def get_webhook(db: Database, user_id: str, webhook_id: str) -> WebhookRow:
    row = await db.fetch_one(_OWNED, {"webhook_id": webhook_id, "user_id": user_id})
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")
    return cast(WebhookRow, row)


async def list_webhooks(db: Database, user_id: str) -> list[WebhookRow]:
    return cast(list[WebhookRow], await db.fetch_all(_LIST, {"user_id": user_id}))


async def delete_webhook(db: Database, user_id: str, webhook_id: str) -> None:
    row = await get_webhook(db, user_id, webhook_id)
    async with db.transaction() as tx:
        await tx.execute(_DELETE, {"pk": row["pk"], "now": now_ms()})


async def subscriptions(tx: Connection, user_id: str) -> list[Row]:
    """The user's live webhooks, read once for the several events of one change: give them
    to each :func:`enqueue`."""
    return await tx.fetch_all(_SUBSCRIBED, {"user_id": user_id})


async def enqueue(
    tx: Connection, user_id: str, event_type: str, data: dict[str, Any], *, subscribed: list[Row] | None = None
) -> int:
    """Write the event's deliveries into the outbox (inside the event's transaction), one
    per webhook of the user subscribed to it, in one statement however many there are.

    ``subscribed``: the user's webhooks already read (:func:`subscriptions`), by a change
    that sends several events (a reply that finishes sends up to four); else read here.
    """
    hooks = await subscriptions(tx, user_id) if subscribed is None else subscribed
    now = now_ms()
    targets = [hook["pk"] for hook in hooks if event_type in hook["events"].split(",")]
    deliveries = [{"id": ids.new_id("msg"), "webhook_pk": pk} for pk in targets]
    if not deliveries:
        return 0
    payload = orjson.dumps({"type": event_type, "timestamp": isoformat_ms(now), "data": data}).decode()
    params = {"deliveries": orjson.dumps(deliveries).decode(), "event_type": event_type, "payload": payload, "now": now}
    await tx.execute(_ENQUEUE, params)
    await tx.notify(CHANNEL, "")
    return len(deliveries)


# ------------------------------------------------------------------------ sending

_CLAIM = (
    sa.update(webhook_deliveries)
    .where(
        _d.pk
        == sa.select(_d.pk)
        .where(sa.text("status = 'pending'"), _d.next_attempt_at <= sa.bindparam("now"))
        .order_by(_d.next_attempt_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    .values(next_attempt_at=sa.bindparam("lease"), attempts=_d.attempts + 1)
    .returning(_d.pk, _d.id, _d.webhook_pk, _d.payload, _d.attempts, _d.created_at)
)
_TARGET = sa.select(_w.url, _w.secret, _w.deleted_at).where(_w.pk == sa.bindparam("pk"))
_RECORD = sa.insert(webhook_attempts).values(
    {c: sa.bindparam(c) for c in ("delivery_pk", "attempted_at", "status_code", "error", "duration_ms")}
)
_SETTLE = (
    sa.update(webhook_deliveries)
    .where(_d.pk == sa.bindparam("pk"), _d.attempts == sa.bindparam("attempt"))
    .values(status=sa.bindparam("status"), next_attempt_at=sa.bindparam("next"), delivered_at=sa.bindparam("delivered"))
)


async def deliver_one(db: Database, http: httpx2.AsyncClient, *, retry_seconds: list[float]) -> bool:
    """Send the most overdue delivery once; False when none is due.

    ``http`` comes from :func:`sender`, whose connections apply the outbound address rule.
    """
    now = now_ms()
    async with db.transaction() as tx:
        claimed = await tx.fetch_one(_CLAIM, {"now": now, "lease": now + SEND_LEASE_MS})
    if claimed is None:
        return False
    target = await db.fetch_one(_TARGET, {"pk": claimed["webhook_pk"]})
    assert target is not None
    status_code: int | None = None
    error: str | None = None
    started = time.monotonic()
    attempt = claimed["attempts"]
    if target["deleted_at"] is not None:
        error = "the webhook was deleted"
    elif attempt > len(retry_seconds) + 1:  # re-claimed past the limit (a crash mid-attempt)
        error = f"not sent: the delivery has used its {len(retry_seconds) + 1} attempts"
    else:
        try:
            outbound.parse_url(target["url"])
            signed_at = datetime.now(UTC)
            signature = Webhook(target["secret"]).sign(claimed["id"], signed_at, claimed["payload"])
            response = await http.post(
                target["url"],
                content=claimed["payload"],
                headers={
                    "content-type": "application/json",
                    "webhook-id": claimed["id"],
                    "webhook-timestamp": str(int(signed_at.timestamp())),
                    "webhook-signature": signature,
                },
                timeout=TIMEOUT_SECONDS,
            )
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"answered {status_code}"
        except Exception as failure:  # anything (bad stored URL, TLS, refused address) fails the attempt
            error = (getattr(failure, "message", None) or f"{type(failure).__name__}: {failure}")[:1000]
    finished = now_ms()
    if error is None:
        status, following, delivered = "delivered", None, finished
    elif target["deleted_at"] is None and attempt <= len(retry_seconds):
        status, following, delivered = "pending", finished + int(retry_seconds[attempt - 1] * 1000), None
    else:
        status, following, delivered = "failed", None, None
    async with db.transaction() as tx:
        await tx.execute(
            _RECORD,
            {
                "delivery_pk": claimed["pk"], "attempted_at": now, "status_code": status_code, "error": error,
                "duration_ms": int((time.monotonic() - started) * 1000),
            },
        )  # fmt: skip
        await tx.execute(
            _SETTLE,
            {"pk": claimed["pk"], "attempt": attempt, "status": status, "next": following, "delivered": delivered},
        )
    metrics.webhook_attempt(status)  # aichats_webhook_attempts_total
    return True


_DELIVERIES = (
    sa.select(_d.pk, _d.id, _d.event_type, _d.payload, _d.status, _d.attempts, _d.next_attempt_at, _d.created_at,
              _d.delivered_at)
    .where(_d.webhook_pk == sa.bindparam("webhook_pk"))
    .order_by(_d.pk.desc())
    .limit(100)
)  # fmt: skip
# The attempts of those same deliveries, all in one query (not one per delivery).
_ATTEMPTS = (
    sa.select(_a.delivery_pk, _a.attempted_at, _a.status_code, _a.error, _a.duration_ms)
    .where(_a.delivery_pk.in_(_DELIVERIES.with_only_columns(_d.pk)))
    .order_by(_a.pk)
)


async def deliveries(db: Database, webhook_pk: int) -> list[dict[str, Any]]:
    """The webhook's last 100 deliveries, newest first, each with every attempt."""
    rows = await db.fetch_all(_DELIVERIES, {"webhook_pk": webhook_pk})
    attempts_of: dict[int, list[Row]] = {}
    if rows:
        for attempt in await db.fetch_all(_ATTEMPTS, {"webhook_pk": webhook_pk}):
            attempts_of.setdefault(attempt["delivery_pk"], []).append(attempt)
    out = []
    for row in rows:
        attempts = attempts_of.get(row["pk"], [])
        out.append(
            {
                "id": row["id"],
                "event_type": row["event_type"],
                "status": row["status"],
                "payload": orjson.loads(row["payload"]),
                "created_at": isoformat_ms(row["created_at"]),
                "delivered_at": isoformat_ms_or_none(row["delivered_at"]),
                "next_attempt_at": None
                if row["status"] != "pending" or row["next_attempt_at"] is None
                else isoformat_ms(row["next_attempt_at"]),
                "attempts": [
                    {
                        "attempted_at": isoformat_ms(a["attempted_at"]),
                        "status_code": a["status_code"],
                        "error": a["error"],
                        "duration_ms": a["duration_ms"],
                    }
                    for a in attempts
                ],
            }
        )
    return out
