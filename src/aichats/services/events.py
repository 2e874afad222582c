"""A chat's events: stored in order, announced on commit, replayed from any point.

Writers append rows inside their own transaction (so an event exists exactly when
what it describes does) and notify ``aichats_events``; readers (the SSE stream) wait on
an in-process :class:`EventHub`, woken by that notification from any process
(PostgreSQL) or from this one (SQLite), then read the rows after the last id they sent.
The same kind of hub, on ``aichats_users``, wakes a user's notifications stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import orjson
import sqlalchemy as sa

from aichats.clock import now_ms
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import chat_events

CHANNEL = "aichats_events"
# A user's notifications or badges changed (payload: the user id): the notifications stream.
USERS_CHANNEL = "aichats_users"
MESSAGE_CREATED = "message.created"
MESSAGE_DELTA = "message.delta"
MESSAGE_COMPLETED = "message.completed"
MESSAGE_FAILED = "message.failed"
MESSAGE_RETRIED = "message.retried"
CHAT_UPDATED = "chat.updated"

K = TypeVar("K", bound=Hashable)
_e = chat_events.c
_APPEND = (
    sa.insert(chat_events)
    .values({c: sa.bindparam(c) for c in ("chat_pk", "type", "data", "created_at")})
    .returning(_e.pk)
)
_AFTER = (
    sa.select(_e.pk, _e.type, _e.data)
    .where(_e.chat_pk == sa.bindparam("chat_pk"), _e.pk > sa.bindparam("after"))
    .order_by(_e.pk)
    .limit(sa.bindparam("limit"))
)


async def append(tx: Connection, chat_pk: int, type_: str, data: dict[str, Any]) -> int:
    row = await tx.fetch_one(
        _APPEND, {"chat_pk": chat_pk, "type": type_, "data": orjson.dumps(data).decode(), "created_at": now_ms()}
    )
    assert row is not None
    await tx.notify(CHANNEL, str(chat_pk))
    return int(row["pk"])


_LATEST = sa.select(sa.func.max(_e.pk).label("pk")).where(_e.chat_pk == sa.bindparam("chat_pk"))


async def latest_id(db: Database, chat_pk: int) -> int:
    """The id of the chat's newest event (0 if none): a stream that starts here sends only what follows."""
    row = await db.fetch_one(_LATEST, {"chat_pk": chat_pk})
    return int(row["pk"] or 0) if row else 0


async def read_after(db: Database, chat_pk: int, after: int, limit: int = 500) -> list[Row]:
    return await db.fetch_all(_AFTER, {"chat_pk": chat_pk, "after": after, "limit": limit})


class EventHub(Generic[K]):
    """Wakes the readers of one key when a notification on the hub's channel names it (one
    hub per channel and process): chats (``aichats_events``, by pk) or users
    (``aichats_users``, by id)."""

    def __init__(self, channel: str = CHANNEL, key: Callable[[str], K] = int) -> None:  # type: ignore[assignment]
        self._channel = channel
        self._key = key
        self._waiters: dict[K, set[asyncio.Event]] = {}

    async def attach(self, db: Database) -> None:
        await db.listen(self._channel, self._notified)

    def _notified(self, payload: str | None) -> None:
        if payload is None:  # notifications may have been lost: wake everyone to re-read
            targets = [e for waiters in self._waiters.values() for e in waiters]
        else:
            targets = list(self._waiters.get(self._key(payload), ()))
        for event in targets:
            event.set()

    def subscribe(self, key: K) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        return event

    def unsubscribe(self, key: K, event: asyncio.Event) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[key]
