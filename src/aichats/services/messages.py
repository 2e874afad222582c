"""Messages of a chat: the user's, stored at once with a queued agent turn (a new chat's
first one too: :func:`create_chat`), and the rows of the agent's reply, which
:mod:`aichats.services.replies` writes for the run that produces it.

A message counts on its chat (``message_count``, ``last_message_at``: the chat's own
statements, in :mod:`aichats.services.chats`), so this module imports ``chats``; ``chats``
imports nothing of this one but a type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypedDict, cast

import orjson
import sqlalchemy as sa

from aichats import ids
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.errors import Conflict, NotFound
from aichats.services import chats, events, runs, tool_calls
from aichats.services.files import file_json, owned_files
from aichats.services.pagination import Keyset, Page, PageRequest, read_page
from aichats.services.sql import json_records
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


def _fixed(*values: str) -> list[sa.ColumnElement[str]]:
    """Values written into the SQL (``database.py`` binds no expanding lists)."""
    return [sa.literal_column(f"'{value}'", sa.String()) for value in values]


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
# A failed reply, or the chat's last reply once it ended (Regenerate), goes back to
# ``pending``, as if just queued (the conditional update is the lock: of two concurrent
# retries, one finds it pending).
_later = messages.alias("later")
_RETRY_REPLY = (
    sa.update(messages)
    .where(
        _m.chat_pk == sa.bindparam("chat_pk"),
        _m.id == sa.bindparam("message_id"),
        _m.role == "assistant",
        sa.or_(
            _m.status == "failed",
            sa.and_(
                _m.status.in_(_fixed("completed", "cancelled")),
                ~sa.exists().where(_later.c.chat_pk == _m.chat_pk, _later.c.pk > _m.pk),
            ),
        ),
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
    counted: bool = True,
) -> MessageRow:
    """Store the user's message, its reply-to-be (``pending``) and the agent's queued turn.

    The pending reply holds the reply's place right after the message it answers, so a
    chat always reads question, answer, question, answer, however the turns are timed.
    ``counted=False``: the chat already counts the message (a new chat's first).
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
        counted=counted,
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


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A text-only user message of :func:`add_user_messages`, in its chat, with its turn."""

    chat_pk: int
    chat_id: str
    text: str
    source: MessageSource
    trigger: str
    scheduled_for: int | None = None


_new_messages = json_records(
    "messages", ord=sa.Integer(), id=sa.Text(), chat_pk=sa.BigInteger(), role=sa.Text(), content=sa.Text(),
    status=sa.Text(), source=sa.Text(), completed_at=sa.BigInteger(),
)  # fmt: skip
_INSERT_MANY = (
    sa.insert(messages)
    .from_select(
        ["id", "chat_pk", "role", "content", "status", "source", "attachments", "created_at", "completed_at"],
        sa.select(
            _new_messages.c.id, _new_messages.c.chat_pk, _new_messages.c.role, _new_messages.c.content,
            _new_messages.c.status, _new_messages.c.source, sa.literal("[]"), sa.bindparam("now", type_=sa.BigInteger),
            _new_messages.c.completed_at,
        ).order_by(_new_messages.c.ord),  # pks follow it: each reply right after its message
    )
    .returning(_m.pk, _m.id)
)  # fmt: skip


def _text_message_row(pk: int, message_id: str, text: str, source: MessageSource, now: int) -> MessageRow:
    """A user's text-only message as stored at ``now`` (no file, completed at once): the row
    that a statement writing several at once does not read back."""
    return MessageRow(
        pk=pk, id=message_id, role="user", content=text, status="completed", error=None, source=source.value,
        attachments="[]", model=None, input_tokens=0, output_tokens=0, blended_tokens_micros=0, created_at=now,
        completed_at=now,
    )  # fmt: skip


async def add_user_messages(tx: Connection, batch: Sequence[QueuedMessage], *, now: int) -> list[MessageRow]:
    """:func:`add_user_message` for many chats at once (one message per chat, text only), in
    four statements whatever their number: the messages and their pending replies, the turns
    (:func:`runs.queue_many`), the chats' counts (:func:`chats.count_messages`) and the
    ``message.created`` events (:func:`events.append_many`), with one notification per
    channel. Every row carries ``now``: when the batch is written. The messages, in order."""
    if not batch:
        return []
    records: list[dict[str, Any]] = []
    for item in batch:
        records.append(
            {"id": ids.new_id(ids.MESSAGE), "chat_pk": item.chat_pk, "role": "user", "content": item.text,
             "status": "completed", "source": item.source.value, "completed_at": now}
        )  # fmt: skip
        records.append(
            {"id": ids.new_id(ids.MESSAGE), "chat_pk": item.chat_pk, "role": "assistant", "content": "",
             "status": "pending", "source": "agent", "completed_at": None}
        )  # fmt: skip
    for n, record in enumerate(records):
        record["ord"] = n
    inserted = await tx.fetch_all(_INSERT_MANY, {"messages": orjson.dumps(records).decode(), "now": now})
    pks = {row["id"]: row["pk"] for row in inserted}
    rows: list[MessageRow] = []
    turns: list[runs.NewTurn] = []
    for item, message, reply in zip(batch, records[::2], records[1::2], strict=True):
        row = _text_message_row(pks[message["id"]], message["id"], item.text, item.source, now)
        rows.append(row)
        turns.append(runs.NewTurn(item.chat_pk, item.trigger, row["pk"], pks[reply["id"]], item.scheduled_for))
    await runs.queue_many(tx, turns, now)
    await chats.count_messages(tx, [item.chat_pk for item in batch], now)
    created = [
        (item.chat_pk, events.MESSAGE_CREATED, message_json(row, item.chat_id))
        for item, row in zip(batch, rows, strict=True)
    ]
    await events.append_many(tx, created, now)
    return rows


async def create_chat(tx: Connection, user_id: str, data: chats.NewChat) -> dict[str, Any]:
    """Store a chat, its first user message and the queued agent turn (inside ``tx``): the
    reply is produced outside the request.

    Here rather than in ``chats``, which stores the row (:func:`chats.insert_chat`): a
    message counts on its chat, so this module imports ``chats``, and not the reverse.
    """
    now = now_ms()
    chat = await chats.insert_chat(tx, user_id, data, now)  # counting the first message
    await add_user_message(
        tx, user_id=user_id, chat_pk=chat["pk"], chat_id=chat["id"], data=data.message, now=now, counted=False
    )
    return chat


def _insert_from(chat_pk: sa.ColumnElement[Any], prefix: str) -> sa.Insert:
    """:data:`_INSERT` with its chat taken from another statement's rows; its own values are
    the binds named ``{prefix}_{column}`` (and ``created_at``)."""
    own = ("id", "role", "content", "status", "source", "suggestion_type", "attachments", "completed_at")
    types = {"completed_at": sa.BigInteger}
    return sa.insert(messages).from_select(
        ["chat_pk", *own, "created_at"],
        sa.select(
            chat_pk,
            *(sa.bindparam(f"{prefix}_{name}", type_=types.get(name, sa.String)) for name in own),
            sa.bindparam("created_at", type_=sa.BigInteger),
        ),
    )


def _create_chat_statement() -> sa.Select[Any]:
    """:func:`create_chat` of a chat without attachments, as one PostgreSQL statement: its rows
    written by data-modifying CTEs (each table's insert as its own module writes it, fed the
    new pks), its two notifications sent as the runs then events would send them. Run alone,
    it is its own transaction: one round trip where the transaction takes eight (BEGIN, five
    INSERTs, the NOTIFYs, COMMIT). Measured with 32 concurrent creates: 1,150 a second in
    eight statements, 1,750 to 2,100 in one. Its row (the pk and the two notifications'
    results) is not read: it runs grouped with others (:func:`create_chat_alone`). SQLite has
    no DML in CTEs, and needs none: its statements are calls, not round trips."""
    chat = chats.INSERT_CHAT.cte("new_chat")
    asked = _insert_from(chat.c.pk, "message").returning(_m.pk, _m.chat_pk).cte("asked")
    # Read from the question's row, the reply is inserted after it (sibling CTEs run in no
    # set order): its pk is the larger, and a chat reads question, then answer.
    reply = _insert_from(asked.c.chat_pk, "reply").returning(_m.pk).cte("reply")
    turn = runs.queue_from(chat.c.pk, asked.c.pk, reply.c.pk).cte("turn")
    event = events.append_from(chat.c.pk).cte("event")
    payload = sa.cast(chat.c.pk, sa.Text)
    return sa.select(
        chat.c.pk,
        sa.func.pg_notify(sa.literal(runs.CHANNEL), payload),
        sa.func.pg_notify(sa.literal(events.CHANNEL), payload),
    ).add_cte(turn, event)


_CREATE_CHAT = _create_chat_statement()


async def create_chat_alone(db: Database, user_id: str, data: chats.NewChat) -> dict[str, Any]:
    """:func:`create_chat` in a transaction of its own, the chat's row returned without its
    pk. On PostgreSQL, for a chat whose first message attaches no file (nothing to read
    first), in one statement (:func:`_create_chat_statement`), run with the creates of other
    requests at the same time in one round trip and one commit (:meth:`Database.run_grouped`),
    which reads no pk back. Measured in bench/api.py: 2,000 creates a second alone, 3,300
    grouped (bench/README.md, eighth session)."""
    if db.dialect != "postgresql" or data.message.file_ids:
        async with db.transaction() as tx:
            chat = await create_chat(tx, user_id, data)
        del chat["pk"]
        return chat
    now = now_ms()
    chat = chats.new_chat_row(user_id, data, now)
    first = data.message
    message = _text_message_row(0, ids.new_id(ids.MESSAGE), first.text, first.source, now)  # its pk unread
    params = {
        **chat,
        "message_id": message["id"], "message_role": "user", "message_content": first.text,
        "message_status": "completed", "message_source": message["source"],
        "message_suggestion_type": first.suggestion_type, "message_attachments": "[]", "message_completed_at": now,
        "reply_id": ids.new_id(ids.MESSAGE), "reply_role": "assistant", "reply_content": "", "reply_status": "pending",
        "reply_source": "agent", "reply_suggestion_type": None, "reply_attachments": "[]", "reply_completed_at": None,
        "run_id": ids.new_id(ids.RUN), "trigger": "message", "scheduled_for": None,
        "event_type": events.MESSAGE_CREATED, "event_data": orjson.dumps(message_json(message, chat["id"])).decode(),
    }  # fmt: skip
    await db.run_grouped(_CREATE_CHAT, params)
    return chat


async def reset_reply(tx: Connection, chat_pk: int, message_id: str, now: int) -> MessageRow:
    """A failed reply, or the chat's last reply once it ended, back to ``pending``: emptied,
    its tool calls and steps forgotten, no longer counted (a pending reply counts when it
    starts), for a retry or a regeneration (:func:`aichats.services.replies.retry`). What it
    cost stays on the chat's usage: those tokens were used.

    The reply keeps its place after the message it answers. A message that cannot be
    written again is a NotFound or a Conflict that says why.
    """
    reply = await tx.fetch_one(_RETRY_REPLY, {"chat_pk": chat_pk, "message_id": message_id})
    if reply is None:
        state = await tx.fetch_one(_MESSAGE_STATE, {"chat_pk": chat_pk, "message_id": message_id})
        if state is None:
            raise NotFound(f"no message {message_id} in this chat")
        if state["role"] != "assistant":
            raise Conflict("only the agent's replies can be retried; this is the user's message")
        if state["status"] in ("completed", "cancelled"):
            raise Conflict("only the chat's last reply can be written again; a failed one can be retried anywhere")
        raise Conflict(f"only a failed or finished reply can be retried; this one is {state['status']}")
    await tool_calls.forget(tx, reply["pk"])
    # A pending reply is not counted (it counts when it starts): the retried one stops counting.
    await chats.uncount_message(tx, chat_pk, now)
    return cast(MessageRow, reply)


_CANCEL_REPLY = (
    sa.update(messages)
    .where(_m.pk == sa.bindparam("message_pk"), _m.status.in_(_fixed("pending", "streaming", "waiting")))
    .values(
        status="cancelled",
        input_tokens=sa.bindparam("input_tokens"),
        output_tokens=sa.bindparam("output_tokens"),
        blended_tokens_micros=sa.bindparam("blended_tokens_micros"),
        completed_at=sa.bindparam("now"),
    )
    .returning(*MESSAGE_COLUMNS)
)
_REPLY_OF_ID = sa.select(_m.pk, _m.role, _m.status).where(
    _m.chat_pk == sa.bindparam("chat_pk"), _m.id == sa.bindparam("message_id")
)


async def reply_to_cancel(tx: Connection, chat_pk: int, message_id: str) -> Row:
    """The reply the user stops (pk, status): one that has not ended, else 404 or 409."""
    row = await tx.fetch_one(_REPLY_OF_ID, {"chat_pk": chat_pk, "message_id": message_id})
    if row is None:
        raise NotFound(f"no message {message_id} in this chat")
    if row["role"] != "assistant":
        raise Conflict("only the agent's replies can be stopped; this is the user's message")
    if row["status"] not in ("pending", "streaming", "waiting"):
        raise Conflict(f"this reply is {row['status']}: there is nothing to stop")
    return row


async def cancel_reply(
    tx: Connection, chat_pk: int, target: Row, *, input_tokens: int, output_tokens: int,
    blended_tokens_micros: int, now: int,
) -> MessageRow | None:  # fmt: skip
    """The reply ``target`` (:func:`reply_to_cancel`) ends ``cancelled``, keeping what it
    wrote and what it cost so far; None if it ended meanwhile. A pending reply, never
    counted, counts now: it is a message of the chat from here on."""
    row = await tx.fetch_one(
        _CANCEL_REPLY,
        {
            "message_pk": target["pk"], "input_tokens": input_tokens, "output_tokens": output_tokens,
            "blended_tokens_micros": blended_tokens_micros, "now": now,
        },
    )  # fmt: skip
    if row is None:
        return None
    if target["status"] == "pending":
        await chats.count_message(tx, chat_pk, now)
    return cast(MessageRow, row)


def message_json(row: Row, chat_id: str, calls: list[tool_calls.ToolCallRow] | None = None) -> dict[str, Any]:
    """A message as the API shows it (with its tool calls, for a reply that made some)."""
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
        "tool_calls": [tool_calls.tool_call_json(call) for call in calls or ()],
    }


# Oldest first: a chat reads top to bottom (``last=N``: the newest N).
_LIST = Keyset(
    "m", sa.select(*MESSAGE_COLUMNS).where(_m.chat_pk == sa.bindparam("chat_pk")), (_m.pk,), descending=False
)


async def list_messages(db: Database, chat_pk: int, page: PageRequest) -> Page[MessageRow]:
    """A page of the chat's messages, oldest first (``last=N``: the newest N)."""
    return await read_page(db, _LIST, page, {"chat_pk": chat_pk})


async def calls_of_page(db: Database, page: Page[MessageRow]) -> dict[int, list[tool_calls.ToolCallRow]]:
    """The tool calls of a page's replies, by message pk (one query, whatever the page's length)."""
    return await tool_calls.of_messages(db, [row["pk"] for row in page.items if row["role"] == "assistant"])


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
# Only a reply that has not ended: the run's fence (checked first) keeps a stopped one stopped.
_RESTART_REPLY = (
    sa.update(messages)
    .where(_m.pk == sa.bindparam("message_pk"), _m.status.in_(_fixed("pending", "streaming", "waiting")))
    .values(
        content=sa.bindparam("content"), status="streaming", error=None, completed_at=None, model=sa.bindparam("model")
    )
    .returning(*MESSAGE_COLUMNS)
)
# A pending reply becomes a message when it starts: that is its creation for the reader.
_START_REPLY = _RESTART_REPLY.values(created_at=sa.bindparam("now"))
# Only while it streams: a reply the user stopped keeps the text it had then.
_WRITE_REPLY = (
    sa.update(messages)
    .where(_m.pk == sa.bindparam("message_pk"), _m.status == "streaming")
    .values(content=sa.bindparam("content"))
)
_SUSPEND_REPLY = (
    sa.update(messages)
    .where(_m.pk == sa.bindparam("message_pk"), _m.status == "streaming")
    .values(content=sa.bindparam("content"), status="waiting")
    .returning(*MESSAGE_COLUMNS)
)
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


async def start_reply(tx: Connection, chat_pk: int, message_pk: int, *, model: str, now: int, text: str = "") -> Row:
    """The reply starts streaming: a pending one is created (and counted) now; one whose
    earlier attempt was lost with its worker, or that waited for an approval, goes on,
    keeping its place, from ``text``, what its stored steps wrote."""
    previous = await tx.fetch_one(_REPLY_STATUS, {"message_pk": message_pk})
    assert previous is not None
    params = {"message_pk": message_pk, "model": model, "now": now, "content": text}
    if previous["status"] == "pending":
        row = await tx.fetch_one(_START_REPLY, params)
        await chats.count_message(tx, chat_pk, now)
    else:
        row = await tx.fetch_one(_RESTART_REPLY, params)
    assert row is not None
    return row


_MODEL_AND_ID = sa.select(_m.id, _m.model).where(_m.pk == sa.bindparam("message_pk"))


async def model_of(tx: Connection, message_pk: int) -> str | None:
    """The model writing (or that wrote) the reply ``message_pk``."""
    row = await tx.fetch_one(_MODEL_AND_ID, {"message_pk": message_pk})
    return None if row is None else row["model"]


async def id_of(tx: Connection, message_pk: int) -> str:
    row = await tx.fetch_one(_MODEL_AND_ID, {"message_pk": message_pk})
    assert row is not None
    return str(row["id"])


async def write_reply(tx: Connection, message_pk: int, content: str) -> None:
    """The streaming reply's text so far."""
    await tx.execute(_WRITE_REPLY, {"message_pk": message_pk, "content": content})


async def suspend_reply(tx: Connection, message_pk: int, content: str) -> Row | None:
    """The reply waits for the user to approve a tool call (None if it no longer streams)."""
    return await tx.fetch_one(_SUSPEND_REPLY, {"message_pk": message_pk, "content": content})


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
