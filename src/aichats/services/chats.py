"""AI chats: create, read, update, list and soft-delete a user's conversations.

Every query is scoped by the owner's ``user_id``, so another user's chat is simply not
found. Creating a chat stores its first user message and queues the agent's turn (a
``runs`` row) in the same transaction: the reply is produced outside the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from functools import cache
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from aichats import ids
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.errors import NotFound
from aichats.services.events import USERS_CHANNEL
from aichats.services.messages import MessageInput, add_user_message, decimal_tokens
from aichats.services.pagination import (
    Page,
    PageRequest,
    build_page,
    decode_cursor,
    encode_cursor,
)
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import ai_chats

MAX_TITLE_LENGTH = 200
MAX_REFERENCE_LENGTH = 64
MAX_QUERY_LENGTH = 200  # a title search is at most as long as a title

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE_LENGTH)]
Reference = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_REFERENCE_LENGTH, pattern=r"^[A-Za-z0-9_\-]+$")
]


class AgentIdentifier(StrEnum):
    support = "support"
    general = "general"


class NotificationPreference(StrEnum):
    all = "all"
    none = "none"


def _same_company(data: Any) -> Any:
    """``current_company_id`` (older clients) and ``current_account_id`` are one field."""
    if isinstance(data, dict) and "current_account_id" in data:
        account = data["current_account_id"]
        company = data.get("current_company_id", account)
        if company != account:
            raise ValueError("current_company_id and current_account_id name the same field; send one")
        data = {k: v for k, v in data.items() if k != "current_account_id"}
        data["current_company_id"] = account
    return data


class ChatCreate(MessageInput):
    """Body of ``POST /ai_chats``: the chat and its first message."""

    title: Title | None = None
    current_company_id: Reference | None = Field(
        None, description="The company (or account) the chat is about; `current_account_id` is accepted too."
    )
    agent_identifier: AgentIdentifier = AgentIdentifier.support

    @model_validator(mode="before")
    @classmethod
    def _merge_company(cls, data: Any) -> Any:
        return _same_company(data)


class ChatUpdate(BaseModel):
    """Body of ``PATCH /ai_chats/{id}``: fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = Field(None, description="New title; `null` clears it.")
    notification_preference: NotificationPreference | None = None
    current_company_id: Reference | None = Field(
        None, description="`current_account_id` is accepted too; `null` clears it."
    )

    _merge_company = model_validator(mode="before")(_same_company)

    @model_validator(mode="after")
    def _check(self) -> ChatUpdate:
        if "notification_preference" in self.model_fields_set and self.notification_preference is None:
            raise ValueError("notification_preference must be 'all' or 'none'")
        return self


class ChatOrder(StrEnum):
    created_at = "created_at"
    last_activity_at = "last_activity_at"


# Which filters a list applies (active crons, agent, title): its statements' cache key.
Shape = tuple[bool, bool, bool]


@dataclass(frozen=True, slots=True)
class ChatFilter:
    only_active_crons: bool = False
    agent_identifier: AgentIdentifier | None = None
    query: str | None = None  # text the title contains, any case (None or "": no filter)

    @property
    def shape(self) -> Shape:
        """Which filters apply: part of the cached statements' key (their values are binds)."""
        return (self.only_active_crons, self.agent_identifier is not None, bool(self.query))


# ------------------------------------------------------------------------- queries

_c = ai_chats.c
CHAT_COLUMNS = (
    _c.pk,
    _c.id,
    _c.user_id,
    _c.title,
    _c.notification_preference,
    _c.agent_identifier,
    _c.message_count,
    _c.blended_token_usage_micros,
    _c.created_at,
    _c.updated_at,
    _c.last_message_at,
    _c.activity_at,
)
_OWNED_LIVE = (_c.id == sa.bindparam("chat_id"), _c.user_id == sa.bindparam("user_id"), _c.deleted_at.is_(None))

_GET = sa.select(*CHAT_COLUMNS).where(*_OWNED_LIVE)
_INSERT_CHAT = (
    sa.insert(ai_chats)
    .values(
        {
            c: sa.bindparam(c)
            for c in (
                "id",
                "user_id",
                "title",
                "title_locked",
                "notification_preference",
                "agent_identifier",
                "current_company_id",
                "message_count",
                "blended_token_usage_micros",
                "created_at",
                "updated_at",
                "last_message_at",
                "activity_at",
            )
        }
    )
    .returning(_c.pk)
)
_DELETE = sa.update(ai_chats).where(*_OWNED_LIVE).values(deleted_at=sa.bindparam("now"), updated_at=sa.bindparam("now"))


@cache
def _update_statement(fields: frozenset[str]) -> sa.Update:
    values: dict[str, Any] = {name: sa.bindparam("set_" + name) for name in sorted(fields)}
    values["updated_at"] = sa.bindparam("now")
    if "title" in fields:  # the user chose (or cleared) the title: never generate one over it
        values["title_locked"] = sa.true()
    return sa.update(ai_chats).where(*_OWNED_LIVE).values(values).returning(*CHAT_COLUMNS)


def _sort_key(order: ChatOrder) -> tuple[sa.ColumnElement[Any], ...]:
    return (_c.pk,) if order is ChatOrder.created_at else (_c.activity_at, _c.pk)


def _key_and_cursor(order: ChatOrder, name: str) -> tuple[Any, Any]:
    """The sort key as one comparable expression, and the cursor's binds (``after_0``...)."""
    columns = _sort_key(order)
    binds = [sa.bindparam(f"{name}_{i}") for i in range(len(columns))]
    if len(columns) == 1:
        return columns[0], binds[0]
    return sa.tuple_(*columns), sa.tuple_(*binds)


def _filtered(statement: sa.Select, flt: Shape) -> sa.Select:
    only_active_crons, by_agent, by_title = flt
    statement = statement.where(_c.user_id == sa.bindparam("user_id"), _c.deleted_at.is_(None))
    if only_active_crons:
        statement = statement.where(_c.has_active_cron == sa.true())
    if by_agent:
        statement = statement.where(_c.agent_identifier == sa.bindparam("agent_identifier"))
    if by_title:
        # lower() on both sides: the same case folding whatever the dialect (SQLite's LIKE
        # ignores ASCII case only, PostgreSQL's none). The scan stays on the list's index;
        # the title is a filter on the rows it walks.
        pattern = sa.func.lower(sa.bindparam("title_pattern", type_=sa.Text))
        statement = statement.where(sa.func.lower(_c.title).like(pattern, escape="\\"))
    return statement


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@cache
def _page_statement(order: ChatOrder, flt: Shape, after: bool, before: bool, backwards: bool) -> sa.Select:
    """Rows of one page: the window between the cursors, read from one end."""
    statement = _filtered(sa.select(*CHAT_COLUMNS), flt)
    if after:
        key, cursor = _key_and_cursor(order, "after")
        statement = statement.where(key < cursor)
    if before:
        key, cursor = _key_and_cursor(order, "before")
        statement = statement.where(key > cursor)
    columns = _sort_key(order)
    ordering = [c.asc() for c in columns] if backwards else [c.desc() for c in columns]
    return statement.order_by(*ordering).limit(sa.bindparam("limit"))


@cache
def _beyond_statement(order: ChatOrder, flt: Shape, side: Literal["after", "before"]) -> sa.Select:
    """Whether any row lies on the far side of a cursor (the cursor's own row included)."""
    key, cursor = _key_and_cursor(order, side)
    columns = _sort_key(order)
    if side == "after":
        condition, ordering = key >= cursor, [c.asc() for c in columns]
    else:
        condition, ordering = key <= cursor, [c.desc() for c in columns]
    # Ordered so that the probe is a range scan of the list's index, nearest row first.
    return _filtered(sa.select(_c.pk), flt).where(condition).order_by(*ordering).limit(1)


def chat_cursor(order: ChatOrder, row: Row) -> str:
    if order is ChatOrder.created_at:
        return encode_cursor("c", (row["pk"],))
    return encode_cursor("a", (row["activity_at"], row["pk"]))


# ------------------------------------------------------------------------ services


def chat_json(row: Row) -> dict[str, Any]:
    """The AI chat as the API shows it (and as the published clients parse it)."""
    last = row["last_message_at"]
    return {
        "id": row["id"],
        "title": row["title"],
        "notification_preference": row["notification_preference"],
        "agent_identifier": row["agent_identifier"],
        "message_count": row["message_count"],
        "blended_token_usage": decimal_tokens(row["blended_token_usage_micros"]),
        "created_at": isoformat_ms(row["created_at"]),
        "updated_at": isoformat_ms(row["updated_at"]),
        "last_message_at": isoformat_ms_or_none(last),
        "user": {"id": row["user_id"]},
    }


async def create_chat(tx: Connection, user_id: str, data: ChatCreate) -> dict[str, Any]:
    """Store a chat, its first user message and the queued agent turn (inside ``tx``)."""
    now = now_ms()
    chat: dict[str, Any] = {
        "id": ids.new_id(ids.CHAT),
        "user_id": user_id,
        "title": data.title,
        "title_locked": data.title is not None,
        "notification_preference": NotificationPreference.all.value,
        "agent_identifier": data.agent_identifier.value,
        "current_company_id": data.current_company_id,
        "message_count": 0,
        "blended_token_usage_micros": 0,
        "created_at": now,
        "updated_at": now,
        "last_message_at": None,
        "activity_at": now,
    }
    row = await tx.fetch_one(_INSERT_CHAT, chat)
    assert row is not None
    chat["pk"] = row["pk"]
    await add_user_message(tx, user_id=user_id, chat_pk=chat["pk"], chat_id=chat["id"], data=data, now=now)
    chat.update(message_count=1, last_message_at=now)
    return chat


async def get_chat(db: Database, user_id: str, chat_id: str) -> Row:
    row = await db.fetch_one(_GET, {"chat_id": chat_id, "user_id": user_id})
    if row is None:
        raise NotFound(f"no AI chat {chat_id}")
    return row


async def update_chat(db: Database, user_id: str, chat_id: str, data: ChatUpdate) -> Row:
    fields = frozenset(data.model_fields_set)
    if not fields:
        return await get_chat(db, user_id, chat_id)
    params: dict[str, Any] = {"chat_id": chat_id, "user_id": user_id, "now": now_ms()}
    for name in fields:
        value = getattr(data, name)
        params["set_" + name] = value.value if isinstance(value, Enum) else value
    async with db.transaction() as tx:
        row = await tx.fetch_one(_update_statement(fields), params)
    if row is None:
        raise NotFound(f"no AI chat {chat_id}")
    return row


async def delete_chat(db: Database, user_id: str, chat_id: str) -> None:
    """Soft-delete: the chat leaves every read, its rows stay."""
    async with db.transaction() as tx:
        deleted = await tx.execute(_DELETE, {"chat_id": chat_id, "user_id": user_id, "now": now_ms()})
        if deleted:
            await tx.notify(USERS_CHANNEL, user_id)  # its badge leaves the user's badges
    if not deleted:
        raise NotFound(f"no AI chat {chat_id}")


async def list_chats(
    db: Database,
    user_id: str,
    page: PageRequest,
    *,
    order: ChatOrder = ChatOrder.created_at,
    flt: ChatFilter = ChatFilter(),
) -> Page[Row]:
    """One page of the user's live chats, newest first (by creation or by activity)."""
    code = "c" if order is ChatOrder.created_at else "a"
    parts = len(_sort_key(order))
    params: dict[str, Any] = {"user_id": user_id, "limit": page.size + 1}
    if flt.agent_identifier is not None:
        params["agent_identifier"] = flt.agent_identifier.value
    if flt.query:
        params["title_pattern"] = like_pattern(flt.query)
    for side in ("after", "before"):
        cursor = getattr(page, side)
        if cursor is not None:
            for i, part in enumerate(decode_cursor(code, cursor, parts, name=side)):
                params[f"{side}_{i}"] = part
    shape = flt.shape
    rows = await db.fetch_all(
        _page_statement(order, shape, page.after is not None, page.before is not None, page.backwards), params
    )
    more_before = (
        page.after is not None
        and not page.backwards
        and (await db.fetch_one(_beyond_statement(order, shape, "after"), params) is not None)
    )
    more_after = (
        page.before is not None
        and page.backwards
        and (await db.fetch_one(_beyond_statement(order, shape, "before"), params) is not None)
    )
    return build_page(
        rows,
        page,
        lambda row: chat_cursor(order, row),
        more_before_window=more_before,
        more_after_window=more_after,
    )
