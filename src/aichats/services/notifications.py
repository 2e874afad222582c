"""In-app notifications and unread badges.

A reply that lands in a chat whose ``notification_preference`` is ``all`` (scheduled or
not) notifies its user and raises the chat's badge; a muted chat (``none``) gets
neither. Reading a chat clears its badge and marks its notifications read. Each change
notifies ``aichats_users`` (the user's id) in its own transaction, to wake the user's
notifications stream.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from aichats import ids
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.services import webhooks
from aichats.services.events import USERS_CHANNEL
from aichats.services.pagination import Page, PageRequest, newest_first
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
_BADGE_UP = (
    sa.update(ai_chats).where(ai_chats.c.pk == sa.bindparam("chat_pk")).values(unread_count=ai_chats.c.unread_count + 1)
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
_PAGE = (
    sa.select(*_COLUMNS)
    .join(ai_chats, ai_chats.c.pk == _n.chat_pk)
    .where(_n.user_id == sa.bindparam("user_id"))
    .order_by(_n.pk.desc())
    .limit(sa.bindparam("limit"))
)
_PAGE_AFTER = _PAGE.where(_n.pk < sa.bindparam("after_0"))
_UNREAD = sa.select(sa.func.count().label("n")).where(_n.user_id == sa.bindparam("user_id"), _n.read_at.is_(None))
_READ_ONE = (
    sa.update(notifications)
    .where(_n.user_id == sa.bindparam("user_id"), _n.id == sa.bindparam("id"), _n.read_at.is_(None))
    .values(read_at=sa.bindparam("now"))
)
_READ_ALL = (
    sa.update(notifications)
    .where(_n.user_id == sa.bindparam("user_id"), _n.read_at.is_(None))
    .values(read_at=sa.bindparam("now"))
)
_READ_CHAT = (
    sa.update(notifications)
    .where(_n.user_id == sa.bindparam("user_id"), _n.chat_pk == sa.bindparam("chat_pk"), _n.read_at.is_(None))
    .values(read_at=sa.bindparam("now"))
)
_CLEAR_BADGE = sa.update(ai_chats).where(ai_chats.c.pk == sa.bindparam("chat_pk")).values(unread_count=0)
_RECOUNT_BADGES = (
    sa.update(ai_chats)
    .where(ai_chats.c.user_id == sa.bindparam("user_id"))
    .values(
        unread_count=sa.select(sa.func.count())
        .where(_n.chat_pk == ai_chats.c.pk, _n.read_at.is_(None), _n.kind == "ai_chat.reply")
        .scalar_subquery()
    )
)
_LATEST = sa.select(_n.id).where(_n.user_id == sa.bindparam("user_id")).order_by(_n.pk.desc()).limit(1)
_BADGES = sa.select(ai_chats.c.id, ai_chats.c.unread_count).where(
    ai_chats.c.user_id == sa.bindparam("user_id"), ai_chats.c.deleted_at.is_(None), ai_chats.c.unread_count > 0
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


async def notify(tx: Connection, chat: Row, *, kind: str, title: str, body: str, message_id: str | None = None) -> None:
    """Notify the chat's user, unless the chat is muted; replies also raise its badge."""
    if chat["notification_preference"] != "all":
        return
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
        await tx.execute(_BADGE_UP, {"chat_pk": chat["pk"]})
    await tx.notify(USERS_CHANNEL, chat["user_id"])
    await webhooks.enqueue(
        tx,
        chat["user_id"],
        "notification.created",
        notification_json({**record, "chat_id": chat["id"], "read_at": None}),
    )


async def list_notifications(db: Database, user_id: str, page: PageRequest) -> tuple[Page[Row], int]:
    result = await newest_first(db, _PAGE, _PAGE_AFTER, {"user_id": user_id}, page, "n")
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
            changed = 0
            for notification_id in notification_ids[:MAX_IDS]:
                changed += await tx.execute(_READ_ONE, {"user_id": user_id, "id": notification_id, "now": now})
        await tx.execute(_RECOUNT_BADGES, {"user_id": user_id})
        await tx.notify(USERS_CHANNEL, user_id)
    return changed


async def read_chat(db: Database, user_id: str, chat_pk: int) -> None:
    """The user has seen the chat: clear its badge and its notifications."""
    async with db.transaction() as tx:
        await tx.execute(_READ_CHAT, {"user_id": user_id, "chat_pk": chat_pk, "now": now_ms()})
        await tx.execute(_CLEAR_BADGE, {"chat_pk": chat_pk})
        await tx.notify(USERS_CHANNEL, user_id)


async def badges(db: Database, user_id: str) -> dict[str, int]:
    return {row["id"]: row["unread_count"] for row in await db.fetch_all(_BADGES, {"user_id": user_id})}


async def live_state(db: Database, user_id: str) -> dict[str, Any]:
    """What the notifications stream sends as ``badges``: unread notifications, badges, and
    the newest notification (so a client sees a new one even when the counts do not move)."""
    per_chat = await badges(db, user_id)
    latest = await db.fetch_one(_LATEST, {"user_id": user_id})
    return {
        "unread_count": await unread_count(db, user_id),
        "total": sum(per_chat.values()),
        "ai_chats": per_chat,
        "latest_notification_id": latest["id"] if latest else None,
    }
