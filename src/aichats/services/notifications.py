"""In-app notifications and unread badges.

A reply that lands in a chat whose ``notification_preference`` is ``all`` (scheduled or
not) notifies its user and raises the chat's badge; a muted chat (``none``) gets
neither. A schedule turned off notifies its user too, unless muted, with no badge
(:func:`schedule_deactivated`). Notifications are written in the transaction of what
they tell of (:mod:`aichats.services.replies` for a finished reply, the scheduler for a
schedule it cannot compute). Reading a chat clears its badge and marks its notifications
read. Each change notifies ``aichats_users`` (the user's id) in its own transaction, to
wake the user's notifications stream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson
import sqlalchemy as sa

from aichats import ids
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.services import chats, webhooks
from aichats.services.events import POLL_SECONDS, USERS_CHANNEL, EventHub
from aichats.services.pagination import Keyset, Page, PageRequest, read_page
from aichats.services.sql import json_texts
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import ai_chats, notifications

MAX_IDS = 100

_n = notifications.c
_INSERT = (
    sa.insert(notifications)
    .values(
        {c: sa.bindparam(c) for c in ("id", "user_id", "chat_pk", "kind", "title", "body", "message_id", "created_at")}
    )
    .returning(_n.pk)
)
_COLUMNS = (
    _n.pk,
    _n.id,
    _n.kind,
    _n.title,
    _n.body,
    _n.message_id,
    _n.created_at,
    _n.read_at,
    ai_chats.c.id.label("chat_id"),
)


class NotificationRow(TypedDict):
    """A notification as the list reads it, with its chat's id (typed, not copied: see
    ``chats.ChatRow``)."""

    pk: int
    id: str
    kind: str
    title: str
    body: str
    message_id: str | None
    created_at: int
    read_at: int | None
    chat_id: str


# A deleted chat's notifications leave the user's notifications: not listed, not counted,
# not marked read (so the bell agrees with the badges, which never show a deleted chat).
# The filter is in the queries rather than done once on delete, so a reply that lands
# after its chat was deleted stays out too.
_LIVE_CHAT = sa.exists().where(ai_chats.c.pk == _n.chat_pk, ai_chats.c.deleted_at.is_(None))
# Newest first, ``first``/``after`` only.
_LIST = Keyset(
    "n",
    sa.select(*_COLUMNS)
    .join(ai_chats, ai_chats.c.pk == _n.chat_pk)
    .where(_n.user_id == sa.bindparam("user_id"), ai_chats.c.deleted_at.is_(None)),
    (_n.pk,),
    descending=True,
    forwards_only=True,
)
_UNREAD = sa.select(sa.func.count().label("n")).where(
    _n.user_id == sa.bindparam("user_id"), _n.read_at.is_(None), _LIVE_CHAT
)
# The ids are one JSON array (see :mod:`aichats.services.sql`): one statement for up to
# ``MAX_IDS`` of them.
_READ_SOME = (
    sa.update(notifications)
    .where(_n.user_id == sa.bindparam("user_id"), _n.id.in_(json_texts("ids")), _n.read_at.is_(None), _LIVE_CHAT)
    .values(read_at=sa.bindparam("now"))
)
_READ_ALL = (
    sa.update(notifications)
    .where(_n.user_id == sa.bindparam("user_id"), _n.read_at.is_(None), _LIVE_CHAT)
    .values(read_at=sa.bindparam("now"))
)
_READ_CHAT = (
    sa.update(notifications)
    .where(_n.user_id == sa.bindparam("user_id"), _n.chat_pk == sa.bindparam("chat_pk"), _n.read_at.is_(None))
    .values(read_at=sa.bindparam("now"))
)
_LATEST = sa.select(_n.id).where(_n.user_id == sa.bindparam("user_id"), _LIVE_CHAT).order_by(_n.pk.desc()).limit(1)
# Whether the chat has an unread notification of a kind (one entry of ``ix_notifications_unread``).
_UNREAD_OF_KIND = (
    sa.select(_n.pk)
    .where(
        _n.user_id == sa.bindparam("user_id"),
        _n.chat_pk == sa.bindparam("chat_pk"),
        _n.read_at.is_(None),
        _n.kind == sa.bindparam("kind"),
    )
    .limit(1)
)


def notification_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "ai_chat_id": row["chat_id"],
        "title": row["title"],
        "body": row["body"],
        "message_id": row["message_id"],
        "created_at": isoformat_ms(row["created_at"]),
        "read_at": isoformat_ms_or_none(row["read_at"]),
    }


async def list_notifications(db: Database, user_id: str, page: PageRequest) -> tuple[Page[NotificationRow], int]:
    result = await read_page(db, _LIST, page, {"user_id": user_id})
    return result, await unread_count(db, user_id)


async def unread_count(db: Database, user_id: str) -> int:
    row = await db.fetch_one(_UNREAD, {"user_id": user_id})
    return int(row["n"]) if row else 0


async def mark_read(db: Database, user_id: str, notification_ids: list[str] | None) -> int:
    """Mark some (or all) of the user's notifications read; badges follow."""
    now = now_ms()
    async with db.transaction() as tx:
        if notification_ids is None:
            changed = await tx.execute(_READ_ALL, {"user_id": user_id, "now": now})
        else:
            some = orjson.dumps(notification_ids[:MAX_IDS]).decode()
            changed = await tx.execute(_READ_SOME, {"user_id": user_id, "ids": some, "now": now})
        await chats.recount_badges(tx, user_id)
        await tx.notify(USERS_CHANNEL, user_id)
    return changed


async def read_chat(db: Database, user_id: str, chat_pk: int) -> None:
    """The user has seen the chat: clear its badge and its notifications."""
    async with db.transaction() as tx:
        await tx.execute(_READ_CHAT, {"user_id": user_id, "chat_pk": chat_pk, "now": now_ms()})
        await chats.clear_badge(tx, chat_pk)
        await tx.notify(USERS_CHANNEL, user_id)


async def badges(db: Database, user_id: str) -> dict[str, int]:
    return await chats.badges(db, user_id)


# How many times this process computed a user's live state: tests and benchmarks read it to
# check that streams share computations (one per user per change, not one per stream).
computations = 0


async def live_state(db: Database, user_id: str) -> dict[str, Any]:
    """What the notifications stream sends as ``badges``: unread notifications, badges, and
    the newest notification (so a client sees a new one even when the counts do not move)."""
    global computations
    computations += 1
    per_chat = await badges(db, user_id)
    latest = await db.fetch_one(_LATEST, {"user_id": user_id})
    return {
        "unread_count": await unread_count(db, user_id),
        "total": sum(per_chat.values()),
        "ai_chats": per_chat,
        "latest_notification_id": latest["id"] if latest else None,
    }


@dataclass
class _Shared:
    """One user's state as last computed, with the version its streams compare."""

    stale: bool = True
    version: int = 0
    data: str = ""
    computed_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LiveStates(EventHub[str]):
    """The users hub (``aichats_users``), which also keeps each followed user's live state.

    A user's state (the badges of up to every chat) is computed once per change and shared
    by all of that user's streams in this process: a notification marks it stale and wakes
    the streams; the first to ask recomputes it (the others wait for that one result), and
    each stream sends it only if its version moved since the one it sent last. An idle
    stream costs nothing; 150 streams of one user cost one computation per change. Without
    cross-process notifications (a lost LISTEN) a state older than ``POLL_SECONDS`` is
    recomputed when asked, once per user. A state is forgotten with its last stream.
    """

    def __init__(self, db: Database) -> None:
        super().__init__(USERS_CHANNEL, str)
        self._db = db
        self._shared: dict[str, _Shared] = {}

    def _notified(self, payload: str | None) -> None:
        if payload is None:  # anything may have changed, for anyone
            for shared in self._shared.values():
                shared.stale = True
        elif (one := self._shared.get(payload)) is not None:
            one.stale = True
        super()._notified(payload)

    def unsubscribe(self, key: str, event: asyncio.Event) -> None:
        super().unsubscribe(key, event)
        if key not in self._waiters:
            self._shared.pop(key, None)

    async def get(self, user_id: str) -> tuple[int, str]:
        """The user's live state (as JSON, serialised once) and its version; call it only
        while subscribed to ``user_id``, which keeps the state up to date."""
        shared = self._shared.setdefault(user_id, _Shared())
        async with shared.lock:
            if not self._db.listening and time.monotonic() - shared.computed_at >= POLL_SECONDS:
                shared.stale = True
            if shared.stale:
                shared.stale = False  # a change from now on marks it again
                try:
                    data = orjson.dumps(await live_state(self._db, user_id)).decode()
                except BaseException:
                    shared.stale = True
                    raise
                shared.computed_at = time.monotonic()
                if data != shared.data:
                    shared.data, shared.version = data, shared.version + 1
            return shared.version, shared.data


# ------------------------------------------------------------ notifying


async def notify(
    tx: Connection,
    chat: Row,
    *,
    kind: str,
    title: str,
    body: str,
    message_id: str | None = None,
    subscribed: list[Row] | None = None,
) -> None:
    """Notify the chat's user (and their ``notification.created`` webhooks), unless the chat
    is muted; replies also raise its badge.

    ``subscribed``: the user's webhooks already read (:func:`webhooks.subscriptions`), by a
    change that sends several events (a reply that finishes); else read here, if needed.
    """
    if chat["notification_preference"] != "all":
        return
    if subscribed is None:
        subscribed = await webhooks.subscriptions(tx, chat["user_id"])
    now = now_ms()
    record = {
        "id": ids.new_id("ntf"),
        "user_id": chat["user_id"],
        "chat_pk": chat["pk"],
        "kind": kind,
        "title": title,
        "body": body,
        "message_id": message_id,
        "created_at": now,
    }
    await tx.fetch_one(_INSERT, record)
    if kind == "ai_chat.reply":
        await chats.raise_badge(tx, chat["pk"])
    await tx.notify(USERS_CHANNEL, chat["user_id"])
    created = notification_json({**record, "chat_id": chat["id"], "read_at": None})
    await webhooks.enqueue(tx, chat["user_id"], "notification.created", created, subscribed=subscribed)


async def schedule_deactivated(
    tx: Connection, chat: Row, *, body: str, details: dict[str, Any], subscribed: list[Row] | None = None
) -> None:
    """A chat's schedule was turned off: the ``ai_chat.schedule.deactivated`` webhook and
    the owner's notification, always together, whichever part of the service turned it off
    (:mod:`aichats.services.replies` after repeated failures of its scheduled turns, the
    scheduler for a schedule it cannot compute). ``subscribed`` as for :func:`notify`."""
    if subscribed is None:
        subscribed = await webhooks.subscriptions(tx, chat["user_id"])
    event = {"ai_chat_id": chat["id"], **details}
    await webhooks.enqueue(tx, chat["user_id"], "ai_chat.schedule.deactivated", event, subscribed=subscribed)
    title = chat["title"] or "AI chat"
    await notify(tx, chat, kind="ai_chat.schedule.deactivated", title=title, body=body, subscribed=subscribed)


SCHEDULE_SKIPPED = "ai_chat.schedule.skipped"


async def schedule_skipped(tx: Connection, chat: Row, *, body: str) -> bool:
    """A scheduled run was skipped (its user's daily token budget is used up): the owner is
    told, unless the chat is muted, once until they read it (a schedule every minute must not
    bury everything else). True when the owner was told (a notification written, the chat
    not muted)."""
    params = {"user_id": chat["user_id"], "chat_pk": chat["pk"], "kind": SCHEDULE_SKIPPED}
    if await tx.fetch_one(_UNREAD_OF_KIND, params) is not None:
        return False
    title = chat["title"] or "AI chat"
    await notify(tx, chat, kind=SCHEDULE_SKIPPED, title=title, body=body)
    return chat["notification_preference"] == "all"
