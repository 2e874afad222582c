"""Messages of a chat: the user's, stored at once with a queued agent turn, and the
agent's, written by the run that produces it (``aichats.runs``)."""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from aichats import ids
from aichats.clock import isoformat_ms, isoformat_ms_or_none
from aichats.errors import Conflict, NotFound
from aichats.services import events
from aichats.services.files import file_json
from aichats.services.pagination import Page, PageRequest, build_page, decode_cursor, encode_cursor
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import ai_chats, files, messages, runs

MAX_MESSAGE_LENGTH = 32_000
MAX_ATTACHMENTS = 10
RUNS_CHANNEL = "aichats_runs"


class MessageSource(StrEnum):
    manual = "manual"
    suggestion = "suggestion"
    link = "link"
    schedule = "schedule"


class Attachment(BaseModel):
    """A previously uploaded file, by id."""

    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, StringConstraints(max_length=64, pattern=r"^file_[A-Za-z0-9]+$")]


_NULL_MEANS_DEFAULT = ("message_attachments", "message_source", "agent_identifier")


class MessageInput(BaseModel):
    """A user message: the body of ``POST /ai_chats/{id}/messages``, and part of chat creation."""

    model_config = ConfigDict(extra="forbid")

    message_text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_LENGTH)] = Field(
        description="What the user says to the agent."
    )
    message_attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    message_source: MessageSource = MessageSource.manual
    suggestion_type: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="Which suggestion the user picked; only with `message_source: suggestion`."
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):  # an explicit null means "the default" for these
            data = {k: v for k, v in data.items() if not (v is None and k in _NULL_MEANS_DEFAULT)}
        return data

    @model_validator(mode="after")
    def _check(self) -> MessageInput:
        if not self.message_text.strip():
            raise ValueError("message_text must not be blank")
        if self.suggestion_type is not None and self.message_source is not MessageSource.suggestion:
            raise ValueError("suggestion_type is only allowed with message_source 'suggestion'")
        if self.message_source is MessageSource.schedule:
            raise ValueError("message_source 'schedule' is reserved for scheduled runs")
        return self


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
_COUNT_MESSAGE = (
    sa.update(ai_chats)
    .where(ai_chats.c.pk == sa.bindparam("chat_pk"))
    .values(
        message_count=ai_chats.c.message_count + 1,
        last_message_at=sa.bindparam("now"),
        activity_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
    )
)
_INSERT_RUN = sa.insert(runs).values(
    {
        c: sa.bindparam(c)
        for c in (
            "id",
            "chat_pk",
            "trigger",
            "status",
            "user_message_pk",
            "assistant_message_pk",
            "scheduled_for",
            "created_at",
        )
    }
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
_ANSWERED = (
    sa.select(runs.c.user_message_pk)
    .where(runs.c.chat_pk == sa.bindparam("chat_pk"), runs.c.assistant_message_pk == sa.bindparam("message_pk"))
    .order_by(runs.c.pk.desc())
    .limit(1)
)
# A pending reply is not counted (it counts when it starts): the retried one stops counting.
_UNCOUNT_MESSAGE = (
    sa.update(ai_chats)
    .where(ai_chats.c.pk == sa.bindparam("chat_pk"))
    .values(message_count=ai_chats.c.message_count - 1, updated_at=sa.bindparam("now"))
)
_OWNED_FILE = sa.select(files.c.id, files.c.filename, files.c.content_type, files.c.size).where(
    files.c.id == sa.bindparam("file_id"), files.c.user_id == sa.bindparam("user_id")
)


async def count_message(tx: Connection, chat_pk: int, now: int) -> None:
    """Count a message on its chat: ``message_count``, ``last_message_at``, activity."""
    await tx.execute(_COUNT_MESSAGE, {"chat_pk": chat_pk, "now": now})


async def insert_message(tx: Connection, chat_pk: int, now: int, *, counted: bool = True, **fields: Any) -> Row:
    """Insert a message; ``counted`` ones count on the chat at once (a pending reply counts
    when it starts)."""
    values = {"suggestion_type": None, "attachments": "[]", "model": None, "completed_at": None, **fields}
    row = await tx.fetch_one(_INSERT, {"id": ids.new_id(ids.MESSAGE), "chat_pk": chat_pk, "created_at": now, **values})
    assert row is not None
    if counted:
        await count_message(tx, chat_pk, now)
    return row


async def add_user_message(
    tx: Connection,
    *,
    user_id: str,
    chat_pk: int,
    chat_id: str,
    data: MessageInput,
    now: int,
    trigger: str = "message",
    scheduled_for: int | None = None,
) -> Row:
    """Store the user's message, its reply-to-be (``pending``) and the agent's queued turn.

    The pending reply holds the reply's place right after the message it answers, so a
    chat always reads question, answer, question, answer, however the turns are timed.
    """
    # Stored with their names and types, so a message shows what was attached without a
    # lookup per file.
    attached = []
    for attachment in data.message_attachments:
        row = await tx.fetch_one(_OWNED_FILE, {"file_id": attachment.id, "user_id": user_id})
        if row is None:
            raise NotFound(f"no file {attachment.id}")
        attached.append(file_json(row))
    message = await insert_message(
        tx,
        chat_pk,
        now,
        role="user",
        content=data.message_text,
        status="completed",
        source=data.message_source.value,
        suggestion_type=data.suggestion_type,
        attachments=orjson.dumps(attached).decode(),
        completed_at=now,
    )
    reply = await insert_message(
        tx, chat_pk, now, counted=False, role="assistant", content="", status="pending", source="agent"
    )
    await _queue_run(tx, chat_pk, trigger, message["pk"], reply["pk"], scheduled_for, now)
    await events.append(tx, chat_pk, events.MESSAGE_CREATED, message_json(message, chat_id))
    await tx.notify(RUNS_CHANNEL, str(chat_pk))
    return message


async def _queue_run(
    tx: Connection, chat_pk: int, trigger: str, user_pk: int, reply_pk: int, scheduled_for: int | None, now: int
) -> None:
    """Queue the agent's turn that writes ``reply_pk`` in answer to ``user_pk``."""
    run = {
        "id": ids.new_id(ids.RUN),
        "chat_pk": chat_pk,
        "trigger": trigger,
        "status": "queued",
        "user_message_pk": user_pk,
        "assistant_message_pk": reply_pk,
        "scheduled_for": scheduled_for,
        "created_at": now,
    }
    await tx.execute(_INSERT_RUN, run)


async def retry_reply(tx: Connection, *, chat_pk: int, chat_id: str, message_id: str, now: int) -> Row:
    """Put a failed reply back to ``pending`` and queue a new turn for it (a ``retry`` run).

    The reply keeps its place after the message it answers. It goes back to being an
    uncounted pending reply, so the worker that starts it counts it once, as any other.
    """
    reply = await tx.fetch_one(_RETRY_REPLY, {"chat_pk": chat_pk, "message_id": message_id})
    if reply is None:
        state = await tx.fetch_one(_MESSAGE_STATE, {"chat_pk": chat_pk, "message_id": message_id})
        if state is None:
            raise NotFound(f"no message {message_id} in this chat")
        if state["role"] != "assistant":
            raise Conflict("only the agent's replies can be retried; this is the user's message")
        raise Conflict(f"only a failed reply can be retried; this one is {state['status']}")
    answered = await tx.fetch_one(_ANSWERED, {"chat_pk": chat_pk, "message_pk": reply["pk"]})
    if answered is None or answered["user_message_pk"] is None:
        raise Conflict("this reply answers no message, so it cannot be retried")
    await tx.execute(_UNCOUNT_MESSAGE, {"chat_pk": chat_pk, "now": now})
    await _queue_run(tx, chat_pk, "retry", answered["user_message_pk"], reply["pk"], None, now)
    await events.append(tx, chat_pk, events.MESSAGE_RETRIED, message_json(reply, chat_id))
    await tx.notify(RUNS_CHANNEL, str(chat_pk))
    return reply


def decimal_tokens(micros: int) -> str:
    """Exact decimal text of a count of millionths of a token: ``123450000`` -> ``"123.45"``."""
    whole, fraction = divmod(micros, 1_000_000)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:06d}".rstrip("0")


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


@cache
def _page_statement(after: bool, before: bool, backwards: bool) -> sa.Select:
    statement = sa.select(*MESSAGE_COLUMNS).where(_m.chat_pk == sa.bindparam("chat_pk"))
    if after:
        statement = statement.where(_m.pk > sa.bindparam("after_0"))
    if before:
        statement = statement.where(_m.pk < sa.bindparam("before_0"))
    return statement.order_by(_m.pk.desc() if backwards else _m.pk.asc()).limit(sa.bindparam("limit"))


@cache
def _beyond_statement(side: str) -> sa.Select:
    condition = _m.pk <= sa.bindparam("after_0") if side == "after" else _m.pk >= sa.bindparam("before_0")
    ordering = _m.pk.desc() if side == "after" else _m.pk.asc()
    return sa.select(_m.pk).where(_m.chat_pk == sa.bindparam("chat_pk"), condition).order_by(ordering).limit(1)


async def list_messages(db: Database, chat_pk: int, page: PageRequest) -> Page[Row]:
    """A page of the chat's messages, oldest first (``last=N``: the newest N)."""
    params: dict[str, Any] = {"chat_pk": chat_pk, "limit": page.size + 1}
    for side in ("after", "before"):
        cursor = getattr(page, side)
        if cursor is not None:
            params[f"{side}_0"] = decode_cursor("m", cursor, 1, name=side)[0]
    rows = await db.fetch_all(_page_statement(page.after is not None, page.before is not None, page.backwards), params)
    more_before = (
        page.after is not None
        and not page.backwards
        and (await db.fetch_one(_beyond_statement("after"), params) is not None)
    )
    more_after = (
        page.before is not None
        and page.backwards
        and (await db.fetch_one(_beyond_statement("before"), params) is not None)
    )
    return build_page(
        rows,
        page,
        lambda row: encode_cursor("m", (row["pk"],)),
        more_before_window=more_before,
        more_after_window=more_after,
    )
