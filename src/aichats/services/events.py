"""A chat's events: stored in order, announced on commit, replayed from any point.

Writers append rows inside their own transaction (so an event exists exactly when
what it describes does) and notify ``aichats_events``; readers (the SSE stream) wait on
an in-process :class:`EventHub`, woken by that notification from any process
(PostgreSQL; on SQLite, from this one, and for another process's commit by the
database's watcher, which tells ``None``: anything may have changed), then read the rows
after the last id they sent.
The same kind of hub, on ``aichats_users``, wakes a user's notifications stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, TypedDict, TypeVar, cast

import orjson
import sqlalchemy as sa

from aichats.clock import now_ms
from aichats.services.sql import json_records
from aichats.storage.database import Connection, Database
from aichats.storage.schema import chat_events

CHANNEL = "aichats_events"
# A user's notifications or badges changed (payload: the user id): the notifications stream.
USERS_CHANNEL = "aichats_users"
# Without cross-process notifications (a lost LISTEN connection), followers of a hub look
# again this often, so that what another process wrote still arrives.
POLL_SECONDS = 1.0
MESSAGE_CREATED = "message.created"
MESSAGE_DELTA = "message.delta"
MESSAGE_COMPLETED = "message.completed"
MESSAGE_FAILED = "message.failed"
MESSAGE_RETRIED = "message.retried"
MESSAGE_WAITING = "message.waiting"  # a reply waits for the user to approve a tool call
MESSAGE_CANCELLED = "message.cancelled"  # the user stopped a reply
TOOL_CALL_STARTED = "tool_call.started"
TOOL_CALL_COMPLETED = "tool_call.completed"  # completed, failed or denied
TOOL_CALL_APPROVAL_REQUIRED = "tool_call.approval_required"
CHAT_UPDATED = "chat.updated"

K = TypeVar("K", bound=Hashable)
_e = chat_events.c
_APPEND = (
    sa.insert(chat_events)
    .values({c: sa.bindparam(c) for c in ("chat_pk", "type", "data", "created_at")})
    .returning(_e.pk)
)


def append_from(chat_pk: sa.ColumnElement[Any]) -> sa.Insert:
    """:func:`append`'s insert, its chat taken from another statement's rows (a CTE of
    :func:`aichats.services.messages.create_chat_alone`); binds ``event_type``,
    ``event_data`` (JSON text) and ``created_at``. The caller notifies :data:`CHANNEL`."""
    return sa.insert(chat_events).from_select(
        ["chat_pk", "type", "data", "created_at"],
        sa.select(
            chat_pk,
            sa.bindparam("event_type", type_=sa.String),
            sa.bindparam("event_data", type_=sa.Text),
            sa.bindparam("created_at", type_=sa.BigInteger),
        ),
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


# A notification may name several keys, joined by ``KEY_SEPARATOR`` (ids never contain it): a
# change to many chats at once (a scheduling pass) is then one NOTIFY, not one per chat.
KEY_SEPARATOR = ","
# PostgreSQL refuses a payload of 8,000 bytes or more: longer lists are cut into several.
MAX_PAYLOAD_BYTES = 7_900


async def notify_keys(tx: Connection, channel: str, keys: Iterable[object]) -> None:
    """Tell ``channel`` about many keys (chat pks, user ids) in as few notifications as the
    payload limit allows: one for up to about 600 chats. :class:`EventHub` wakes each key's
    readers, as for a notification of that key alone."""
    payload: list[str] = []
    size = 0
    for key in dict.fromkeys(str(k) for k in keys):  # each once, in order
        if payload and size + len(key) + 1 > MAX_PAYLOAD_BYTES:
            await tx.notify(channel, KEY_SEPARATOR.join(payload))
            payload, size = [], 0
        payload.append(key)
        size += len(key) + 1
    if payload:
        await tx.notify(channel, KEY_SEPARATOR.join(payload))


_new = json_records("events", ord=sa.Integer(), chat_pk=sa.BigInteger(), type=sa.Text(), data=sa.Text())
_APPEND_MANY = sa.insert(chat_events).from_select(
    ["chat_pk", "type", "data", "created_at"],
    sa.select(_new.c.chat_pk, _new.c.type, _new.c.data, sa.bindparam("now", type_=sa.BigInteger)).order_by(_new.c.ord),
)


async def append_many(tx: Connection, appended: Sequence[tuple[int, str, dict[str, Any]]], now: int) -> None:
    """Append events to many chats, ``(chat_pk, type, data)`` each, in this order, in one
    statement and one notification (:func:`notify_keys`), whatever their number."""
    if not appended:
        return
    records = [
        {"ord": n, "chat_pk": c, "type": t, "data": orjson.dumps(d).decode()} for n, (c, t, d) in enumerate(appended)
    ]
    await tx.execute(_APPEND_MANY, {"events": orjson.dumps(records).decode(), "now": now})
    await notify_keys(tx, CHANNEL, (chat_pk for chat_pk, _, _ in appended))


_COMPACT = sa.delete(chat_events).where(
    _e.chat_pk == sa.bindparam("chat_pk"), _e.type == MESSAGE_DELTA, _e.pk > sa.bindparam("after")
)


async def compact_deltas(tx: Connection, chat_pk: int, after: int) -> int:
    """Delete the chat's ``message.delta`` events after event ``after``; the number deleted.

    Called in the transaction that ends a reply, ``after`` being the event that started it
    (and with 0 when a reply starts over after its worker died). The reply's final event
    (``message.completed`` or ``message.failed``) carries the whole message, so its deltas
    would only take space, forever: a replay from the start gets the reply's
    ``message.created`` then its final event, and a client resuming from the id of a
    deleted delta reads every event after that id, the final one included (ids only grow).
    Every delta of the chat after ``after`` is the reply's own: a chat runs one reply at a
    time, and the one before it has ended. The range keeps this to the reply's own rows.

    Call it *after* appending the event that follows the deltas (the final one, or the
    new ``message.created``): SQLite (no AUTOINCREMENT) gives a new row the largest id
    plus one, so deleting the newest rows first would hand a deleted delta's id to the
    next event, and a client resuming from that id would never see it.
    """
    return await tx.execute(_COMPACT, {"chat_pk": chat_pk, "after": after})


_LATEST = sa.select(sa.func.max(_e.pk).label("pk")).where(_e.chat_pk == sa.bindparam("chat_pk"))


async def latest_id(db: Database, chat_pk: int) -> int:
    """The id of the chat's newest event (0 if none): a stream that starts here sends only what follows."""
    row = await db.fetch_one(_LATEST, {"chat_pk": chat_pk})
    return int(row["pk"] or 0) if row else 0


PAGE_SIZE = 500  # events read per query; a stream reads pages until one comes back short


class EventRow(TypedDict):
    """An event as a stream sends it: its id, type and JSON data (typed, not copied: see
    ``chats.ChatRow``)."""

    pk: int
    type: str
    data: str


async def read_after(db: Database, chat_pk: int, after: int, limit: int = PAGE_SIZE) -> list[EventRow]:
    rows = await db.fetch_all(_AFTER, {"chat_pk": chat_pk, "after": after, "limit": limit})
    return cast(list[EventRow], rows)


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
        else:  # one key, or several (:func:`notify_keys`)
            keys = payload.split(KEY_SEPARATOR) if KEY_SEPARATOR in payload else (payload,)
            targets = [e for key in keys for e in self._waiters.get(self._key(key), ())]
        for event in targets:
            event.set()

    def subscribe(self, key: K, event: asyncio.Event | None = None) -> asyncio.Event:
        """An event set whenever ``key`` is notified (``event`` itself if given: one event can
        wait on several hubs)."""
        event = event if event is not None else asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        return event

    def unsubscribe(self, key: K, event: asyncio.Event) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[key]
