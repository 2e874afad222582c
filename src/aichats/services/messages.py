"""Messages of a chat: the user's, stored at once with a queued agent turn (a new chat's
first one too: :func:`create_chat`), and the rows of the agent's reply, which
:mod:`aichats.services.replies` writes for the run that produces it.

A message counts on its chat (``message_count``, ``last_message_at``: the chat's own
statements, in :mod:`aichats.services.chats`), so this module imports ``chats``; ``chats``
imports nothing of this one but a type.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypedDict, cast

import orjson
import sqlalchemy as sa

from aichats import ids
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.errors import Conflict, NotFound
from aichats.services import chats, events, runs
from aichats.services.files import file_json, owned_files
from aichats.services.pagination import Keyset, Page, PageRequest, read_page
from aichats.services.usage import decimal_tokens
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import messages

MAX_MESSAGE_LENGTH = 32_000
MAX_ATTACHMENTS = 10


class MessageSource(StrEnum):
    manual = "manual"
    suggestion = "suggestion"
    link = "link"
    schedule = "schedule"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A user message to store: its text, the ids of the (uploaded) files it attaches, and
    where it comes from."""

    text: str
    file_ids: tuple[str, ...] = ()
    source: MessageSource = MessageSource.manual
    suggestion_type: str | None = None


_m = messages.c
MESSAGE_COLUMNS = (
    _m.pk,
    _m.id,
    _m.role,
    _m.content,
    _m.status,
    _m.error,
    _m.source,
    _m.attachments,
    _m.model,
    _m.input_tokens,
    _m.output_tokens,
    _m.blended_tokens_micros,
    _m.created_at,
    _m.completed_at,
)


class MessageRow(TypedDict):
    """A message as :data:`MESSAGE_COLUMNS` read it (typed, not copied: see ``chats.ChatRow``)."""

    pk: int
    id: str
    role: str
    content: str
    status: str
    error: str | None
    source: str
    attachments: str  # JSON: a list of {"id", "filename", "content_type", "size"}
    model: str | None
    input_tokens: int
    output_tokens: int
    blended_tokens_micros: int
    created_at: int
    completed_at: int | None


_INSERT = (
    sa.insert(messages)
    .values(
        {
            c: sa.bindparam(c)
            for c in (
                "id",
                "chat_pk",
                "role",
                "content",
                "status",
                "source",
                "suggestion_type",
                "attachments",
                "model",
                "created_at",
                "completed_at",
            )
        }
    )
    .returning(*MESSAGE_COLUMNS)
)
# A failed reply goes back to ``pending``, as if just queued (the conditional update is the
# lock: of two concurrent retries, one finds it failed).
_RETRY_REPLY = (
    sa.update(messages)
    .where(
        _m.chat_pk == sa.bindparam("chat_pk"),
        _m.id == sa.bindparam("message_id"),
        _m.role == "assistant",
        _m.status == "failed",
    )
    .values(
        content="",
        status="pending",
        error=None,
        model=None,
        input_tokens=0,
        output_tokens=0,
        blended_tokens_micros=0,
        completed_at=None,
    )
    .returning(*MESSAGE_COLUMNS)
)
_MESSAGE_STATE = sa.select(_m.role, _m.status).where(
    _m.chat_pk == sa.bindparam("chat_pk"), _m.id == sa.bindparam("message_id")
)


async def insert_message(tx: Connection, chat_pk: int, now: int, *, counted: bool = True, **fields: Any) -> MessageRow:
    """Insert a message; ``counted`` ones count on the chat at once (a pending reply counts
    when it starts)."""
    values = {"suggestion_type": None, "attachments": "[]", "model": None, "completed_at": None, **fields}
    row = await tx.fetch_one(_INSERT, {"id": ids.new_id(ids.MESSAGE), "chat_pk": chat_pk, "created_at": now, **values})
    assert row is not None
    if counted:
        await chats.count_message(tx, chat_pk, now)
    return cast(MessageRow, row)


async def add_user_message(
    tx: Connection,
    *,
    user_id: str,
    chat_pk: int,
    chat_id: str,
    data: NewMessage,
    now: int,
    trigger: str = "message",
    scheduled_for: int | None = None,
) -> MessageRow:
    """Store the user's message, its reply-to-be (``pending``) and the agent's queued turn.

    The pending reply holds the reply's place right after the message it answers, so a
    chat always reads question, answer, question, answer, however the turns are timed.
    """
    # Stored with their names and types, so a message shows what was attached without a
    # lookup per file.
    owned = await owned_files(tx, user_id, list(data.file_ids))
    attached = []
    for file_id in data.file_ids:
        row = owned.get(file_id)
        if row is None:
            raise NotFound(f"no file {file_id}")
        attached.append(file_json(row))
    message = await insert_message(
        tx,
        chat_pk,
        now,
        role="user",
        content=data.text,
        status="completed",
        source=data.source.value,
        suggestion_type=data.suggestion_type,
        attachments=orjson.dumps(attached).decode(),
        completed_at=now,
    )
    reply = await insert_message(
        tx, chat_pk, now, counted=False, role="assistant", content="", status="pending", source="agent"
    )
    await runs.queue(
        tx, chat_pk, trigger=trigger, user_message_pk=message["pk"], reply_pk=reply["pk"],
        scheduled_for=scheduled_for, now=now,
    )  # fmt: skip
    await events.append(tx, chat_pk, events.MESSAGE_CREATED, message_json(message, chat_id))
    return message


async def create_chat(tx: Connection, user_id: str, data: chats.NewChat) -> dict[str, Any]:
    """Store a chat, its first user message and the queued agent turn (inside ``tx``): the
    reply is produced outside the request.

    Here rather than in ``chats``, which stores the row (:func:`chats.insert_chat`): a
    message counts on its chat, so this module imports ``chats``, and not the reverse.
    """
    now = now_ms()
    chat = await chats.insert_chat(tx, user_id, data, now)
    await add_user_message(tx, user_id=user_id, chat_pk=chat["pk"], chat_id=chat["id"], data=data.message, now=now)
    chat.update(message_count=1, last_message_at=now)
    return chat


async def reset_failed_reply(tx: Connection, chat_pk: int, message_id: str, now: int) -> MessageRow:
    """A failed reply back to ``pending``, emptied and no longer counted (a pending reply
    counts when it starts), for a retry (:func:`aichats.services.replies.retry`).

    The reply keeps its place after the message it answers. A message that is not a
    failed reply of this chat is a NotFound or a Conflict that says what it is.
    """
    reply = await tx.fetch_one(_RETRY_REPLY, {"chat_pk": chat_pk, "message_id": message_id})
    if reply is None:
        state = await tx.fetch_one(_MESSAGE_STATE, {"chat_pk": chat_pk, "message_id": message_id})
        if state is None:
            raise NotFound(f"no message {message_id} in this chat")
        if state["role"] != "assistant":
            raise Conflict("only the agent's replies can be retried; this is the user's message")
        raise Conflict(f"only a failed reply can be retried; this one is {state['status']}")
    # A pending reply is not counted (it counts when it starts): the retried one stops counting.
    await chats.uncount_message(tx, chat_pk, now)
    return cast(MessageRow, reply)


def message_json(row: Row, chat_id: str) -> dict[str, Any]:
    """A message as the API shows it."""
    completed = row["completed_at"]
    return {
        "id": row["id"],
        "ai_chat_id": chat_id,
        "role": row["role"],
        "content": row["content"],
        "status": row["status"],
        "error": row["error"],
        "source": row["source"],
        "attachments": orjson.loads(row["attachments"]),
        "model": row["model"],
        "usage": {
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "blended_tokens": decimal_tokens(row["blended_tokens_micros"]),
        },
        "created_at": isoformat_ms(row["created_at"]),
        "completed_at": isoformat_ms_or_none(completed),
    }


# Oldest first: a chat reads top to bottom (``last=N``: the newest N).
_LIST = Keyset(
    "m", sa.select(*MESSAGE_COLUMNS).where(_m.chat_pk == sa.bindparam("chat_pk")), (_m.pk,), descending=False
)


async def list_messages(db: Database, chat_pk: int, page: PageRequest) -> Page[MessageRow]:
    """A page of the chat's messages, oldest first (``last=N``: the newest N)."""
    return await read_page(db, _LIST, page, {"chat_pk": chat_pk})


class HistoryRow(TypedDict):
    """A message as a turn's context reads it (typed, not copied: see ``chats.ChatRow``)."""

    role: Literal["user", "assistant"]
    content: str
    attachments: str


_HISTORY = (
    sa.select(_m.role, _m.content, _m.attachments)
    .where(_m.chat_pk == sa.bindparam("chat_pk"), _m.pk < sa.bindparam("reply_pk"), _m.status == "completed")
    .order_by(_m.pk.desc())
    .limit(sa.bindparam("limit"))
)


async def history(db: Database, chat_pk: int, reply_pk: int, limit: int) -> list[HistoryRow]:
    """The chat's completed messages before the reply ``reply_pk``, newest first, at most ``limit``."""
    rows = await db.fetch_all(_HISTORY, {"chat_pk": chat_pk, "reply_pk": reply_pk, "limit": limit})
    return cast(list[HistoryRow], rows)


# ------------------------------------------------------------ a reply's rows
# The agent's reply, written for its run by :mod:`aichats.services.replies`: started,
# streamed into, finished.

_REPLY_STATUS = sa.select(_m.status).where(_m.pk == sa.bindparam("message_pk"))
_RESTART_REPLY = (
    sa.update(messages)
    .where(_m.pk == sa.bindparam("message_pk"))
    .values(content="", status="streaming", error=None, completed_at=None, model=sa.bindparam("model"))
    .returning(*MESSAGE_COLUMNS)
)
# A pending reply becomes a message when it starts: that is its creation for the reader.
_START_REPLY = _RESTART_REPLY.values(created_at=sa.bindparam("now"))
_WRITE_REPLY = sa.update(messages).where(_m.pk == sa.bindparam("message_pk")).values(content=sa.bindparam("content"))
_FINISH_REPLY = (
    sa.update(messages)
    .where(_m.pk == sa.bindparam("message_pk"))
    .values(
        content=sa.bindparam("content"),
        status=sa.bindparam("status"),
        error=sa.bindparam("error"),
        input_tokens=sa.bindparam("input_tokens"),
        output_tokens=sa.bindparam("output_tokens"),
        blended_tokens_micros=sa.bindparam("blended_tokens_micros"),
        completed_at=sa.bindparam("now"),
    )
    .returning(*MESSAGE_COLUMNS)
)
_FIRST_USER_MESSAGE = (
    sa.select(_m.content).where(_m.chat_pk == sa.bindparam("chat_pk"), _m.role == "user").order_by(_m.pk).limit(1)
)


async def start_reply(tx: Connection, chat_pk: int, message_pk: int, *, model: str, now: int) -> Row:
    """The reply starts streaming, empty: a pending one is created (and counted) now; one
    whose earlier attempt was lost with its worker starts over, keeping its place."""
    previous = await tx.fetch_one(_REPLY_STATUS, {"message_pk": message_pk})
    assert previous is not None
    params = {"message_pk": message_pk, "model": model, "now": now}
    if previous["status"] == "pending":
        row = await tx.fetch_one(_START_REPLY, params)
        await chats.count_message(tx, chat_pk, now)
    else:
        row = await tx.fetch_one(_RESTART_REPLY, params)
    assert row is not None
    return row


async def write_reply(tx: Connection, message_pk: int, content: str) -> None:
    """The streaming reply's text so far."""
    await tx.execute(_WRITE_REPLY, {"message_pk": message_pk, "content": content})


async def finish_reply(
    tx: Connection,
    message_pk: int,
    *,
    content: str,
    status: str,
    error: str | None,
    input_tokens: int,
    output_tokens: int,
    blended_tokens_micros: int,
    now: int,
) -> Row:
    """The reply's final text, status (``completed`` or ``failed``) and usage."""
    params = {
        "message_pk": message_pk, "content": content, "status": status, "error": error, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "blended_tokens_micros": blended_tokens_micros, "now": now,
    }  # fmt: skip
    row = await tx.fetch_one(_FINISH_REPLY, params)
    assert row is not None
    return row


async def first_user_message(tx: Connection, chat_pk: int) -> str | None:
    """The text of the chat's first user message (a title is made of it)."""
    row = await tx.fetch_one(_FIRST_USER_MESSAGE, {"chat_pk": chat_pk})
    return None if row is None else row["content"]
