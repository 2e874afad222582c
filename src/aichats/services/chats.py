"""AI chats: store, read, update, list and soft-delete a user's conversations.

Every query is scoped by the owner's ``user_id``, so another user's chat is simply not
found. A chat is created with its first user message and the agent's queued turn, in one
transaction: :func:`aichats.services.messages.create_chat`, which stores the chat's row
here (:func:`insert_chat`). So ``messages`` imports this module, never the other way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import orjson
import sqlalchemy as sa

from aichats import ids
from aichats.clock import isoformat_ms, now_ms
from aichats.errors import NotFound
from aichats.services import budgets
from aichats.services.events import USERS_CHANNEL
from aichats.services.pagination import Keyset, Page, PageRequest, read_page
from aichats.services.sql import json_records
from aichats.services.usage import decimal_tokens
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import ACTIVE_CRON, ai_chats, notifications

if TYPE_CHECKING:  # a type only: ``messages`` imports this module
    from aichats.services.messages import NewMessage

MAX_TITLE_LENGTH = 200
MAX_REFERENCE_LENGTH = 64
MAX_QUERY_LENGTH = 200  # a title search is at most as long as a title


class AgentIdentifier(StrEnum):
    support = "support"
    general = "general"


class NotificationPreference(StrEnum):
    all = "all"
    none = "none"


@dataclass(frozen=True, slots=True)
class NewChat:
    """A chat to create, with its first message."""

    message: NewMessage
    title: str | None = None
    current_company_id: str | None = None
    agent_identifier: AgentIdentifier = AgentIdentifier.support
    tools: tuple[str, ...] | None = None  # the tools its agent may use (None: all of the user's)


class Unset(Enum):
    """A field of :class:`ChatChanges` left as it is (``None`` is a value: it clears the field)."""

    UNSET = "unset"


UNSET = Unset.UNSET


@dataclass(frozen=True, slots=True)
class ChatChanges:
    """The fields of a chat to change; those left :data:`UNSET` stay as they are."""

    title: str | Literal[Unset.UNSET] | None = UNSET
    notification_preference: NotificationPreference | Literal[Unset.UNSET] = UNSET
    current_company_id: str | Literal[Unset.UNSET] | None = UNSET
    tools: tuple[str, ...] | Literal[Unset.UNSET] | None = UNSET

    def given(self) -> dict[str, Any]:
        """The fields to change, by name, as the columns store them."""
        values = {
            "title": self.title,
            "notification_preference": self.notification_preference,
            "current_company_id": self.current_company_id,
            "tools": self.tools if self.tools is UNSET else tools_column(self.tools),
        }
        return {name: value for name, value in values.items() if value is not UNSET}


def tools_column(tools: tuple[str, ...] | None) -> str | None:
    """A tool selection as its column stores it: a JSON list, or NULL for "every tool"."""
    return None if tools is None else orjson.dumps(list(tools)).decode()


def tools_of(column: str | None) -> list[str] | None:
    """A stored tool selection: the names, or None for "every tool"."""
    return None if column is None else list(orjson.loads(column))


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
    _c.tools,
)


class ChatRow(TypedDict):
    """A chat as :data:`CHAT_COLUMNS` read it.

    The rows of every aggregate are typed this way: the driver's own row (``sqlite3.Row``,
    ``asyncpg.Record``) given a type by ``cast``, never copied into a dict, so reading one
    costs what it did. Read them by key only: they have no ``get`` and cannot be changed.
    """

    pk: int
    id: str
    user_id: str
    title: str | None
    notification_preference: str
    agent_identifier: str
    message_count: int
    blended_token_usage_micros: int
    created_at: int
    updated_at: int
    last_message_at: int | None
    activity_at: int
    tools: str | None  # JSON list of tool names, or NULL: every tool


# A chat as retrieve and list read it: with its row version, which moves whenever a value
# that chat_json shows changes (migration 0010): what their answers are kept by
# (aichats.api.ai_chats). Last, so that CHAT_COLUMNS' positions hold.
CHAT_ANSWER_COLUMNS = (*CHAT_COLUMNS, _c.row_version)

# What the service's UPDATEs of a value that chat_json shows set besides: the row's next
# version. The trigger of migration 0010 moves it for any UPDATE that does not; on SQLite it
# does so by updating the row a second time (its triggers cannot change NEW), which these
# spare (and their RETURNING shows the new version, as on PostgreSQL).
NEXT_VERSION = {"row_version": _c.row_version + 1}

_OWNED_LIVE = (_c.id == sa.bindparam("chat_id"), _c.user_id == sa.bindparam("user_id"), _c.deleted_at.is_(None))

_GET = sa.select(*CHAT_ANSWER_COLUMNS).where(*_OWNED_LIVE)
_GET_VERSION = sa.select(_c.pk, _c.row_version).where(*_OWNED_LIVE)
# Public for the one-statement create of :mod:`aichats.services.messages` (a CTE of it).
INSERT_CHAT = (
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
                "tools",
            )
        }
    )
    .returning(_c.pk)
)
_DELETE = (
    sa.update(ai_chats)
    .where(*_OWNED_LIVE)
    .values(deleted_at=sa.bindparam("now"), updated_at=sa.bindparam("now"), **NEXT_VERSION)
)


@cache
def _update_statement(fields: frozenset[str]) -> sa.Update:
    values: dict[str, Any] = {name: sa.bindparam("set_" + name) for name in sorted(fields)}
    values["updated_at"] = sa.bindparam("now")
    values.update(NEXT_VERSION)
    if "title" in fields:  # the user chose (or cleared) the title: never generate one over it
        values["title_locked"] = sa.true()
    return sa.update(ai_chats).where(*_OWNED_LIVE).values(values).returning(*CHAT_COLUMNS)


def _sort_key(order: ChatOrder) -> tuple[sa.Column[Any], ...]:
    return (_c.pk,) if order is ChatOrder.created_at else (_c.activity_at, _c.pk)


def _filtered(statement: sa.Select[Any], flt: Shape) -> sa.Select[Any]:
    only_active_crons, by_agent, by_title = flt
    statement = statement.where(_c.user_id == sa.bindparam("user_id"), _c.deleted_at.is_(None))
    if only_active_crons:
        statement = statement.where(ACTIVE_CRON)  # as its partial index says it (schema.py)
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
def _keyset(order: ChatOrder, flt: Shape, versions: bool = False) -> Keyset:
    """The list in ``order`` with the filters of ``flt``, newest first: its chats, or (for
    ``versions``) their pk and row version alone (then its sort key too, for the cursors)."""
    code = "c" if order is ChatOrder.created_at else "a"
    key = _sort_key(order)
    columns = (_c.pk, _c.row_version, *key[:-1]) if versions else CHAT_ANSWER_COLUMNS
    return Keyset(code, _filtered(sa.select(*columns), flt), key, descending=True)


def _page_statement(
    order: ChatOrder, flt: Shape, after: bool, before: bool, backwards: bool, versions: bool = False
) -> sa.Select[Any]:
    """One page's statement (the query plan tests read it)."""
    return _keyset(order, flt, versions).page_statement(after, before, backwards)


def _beyond_statement(order: ChatOrder, flt: Shape, side: Literal["after", "before"]) -> sa.Select[Any]:
    """A cursor's far-side probe (the query plan tests read it)."""
    return _keyset(order, flt).beyond_statement(side)


# ------------------------------------------------------------------------ services


# The columns chat_json reads, and nothing else: what a memo of its answers keys on
# (aichats.api.ai_chats.chat_answer).
CHAT_JSON_COLUMNS = (
    "id",
    "user_id",
    "title",
    "notification_preference",
    "agent_identifier",
    "message_count",
    "blended_token_usage_micros",
    "created_at",
    "updated_at",
    "last_message_at",
)


def chat_json(row: Row) -> dict[str, Any]:
    """The AI chat as the API shows it (and as the published clients parse it).

    Its instants are formatted once each: a message moves ``updated_at`` and
    ``last_message_at`` to the same instant, and a new chat has all three the same (a list
    page calls this 20 times)."""
    created, updated, last = row["created_at"], row["updated_at"], row["last_message_at"]
    updated_text = isoformat_ms(updated)
    return {
        "id": row["id"],
        "title": row["title"],
        "notification_preference": row["notification_preference"],
        "agent_identifier": row["agent_identifier"],
        "message_count": row["message_count"],
        "blended_token_usage": decimal_tokens(row["blended_token_usage_micros"]),
        "created_at": updated_text if created == updated else isoformat_ms(created),
        "updated_at": updated_text,
        "last_message_at": updated_text if last == updated else None if last is None else isoformat_ms(last),
        "user": {"id": row["user_id"]},
    }


def chat_tools_json(row: Row) -> dict[str, Any]:
    """The tools a chat's agent may use (``GET/PUT /ai_chats/{id}/tools``): not a field of the
    chat itself, whose fields are the published clients' contract."""
    return {"ai_chat_id": row["id"], "tools": tools_of(row["tools"])}


def new_chat_row(user_id: str, data: NewChat, now: int) -> dict[str, Any]:
    """A new chat's row, its pk aside (:data:`INSERT_CHAT`'s binds), counting its first message
    already: that message is :func:`aichats.services.messages.create_chat`'s, stored in the
    same transaction and uncounted (one UPDATE of the new row fewer, and of its activity index)."""
    return {
        "id": ids.new_id(ids.CHAT),
        "user_id": user_id,
        "title": data.title,
        "title_locked": data.title is not None,
        "notification_preference": NotificationPreference.all.value,
        "agent_identifier": data.agent_identifier.value,
        "current_company_id": data.current_company_id,
        "message_count": 1,
        "blended_token_usage_micros": 0,
        "created_at": now,
        "updated_at": now,
        "last_message_at": now,
        "activity_at": now,
        "tools": tools_column(data.tools),
    }


async def insert_chat(tx: Connection, user_id: str, data: NewChat, now: int) -> dict[str, Any]:
    """Store the chat's row (inside ``tx``): :func:`new_chat_row`, with its pk."""
    chat = new_chat_row(user_id, data, now)
    row = await tx.fetch_one(INSERT_CHAT, chat)
    assert row is not None
    chat["pk"] = row["pk"]
    return chat


async def get_chat(db: Database, user_id: str, chat_id: str) -> ChatRow:
    row = await db.fetch_one_grouped(_GET, {"chat_id": chat_id, "user_id": user_id})
    if row is None:
        raise NotFound(f"no AI chat {chat_id}")
    return cast(ChatRow, row)


async def chat_version(db: Database, user_id: str, chat_id: str) -> tuple[int, int]:
    """The chat's ``(pk, row_version)`` (:func:`get_chat`'s 404 if it is not the user's
    live chat): what names its answer as it is now, read without the rest of its row."""
    row = await db.fetch_one_grouped(_GET_VERSION, {"chat_id": chat_id, "user_id": user_id})
    if row is None:
        raise NotFound(f"no AI chat {chat_id}")
    return row["pk"], row["row_version"]


async def update_chat(db: Database, user_id: str, chat_id: str, data: ChatChanges) -> ChatRow:
    given = data.given()
    fields = frozenset(given)
    if not fields:
        return await get_chat(db, user_id, chat_id)
    params: dict[str, Any] = {"chat_id": chat_id, "user_id": user_id, "now": now_ms()}
    for name, value in given.items():
        params["set_" + name] = value.value if isinstance(value, Enum) else value
    row = await db.write_one(_update_statement(fields), params)
    if row is None:
        raise NotFound(f"no AI chat {chat_id}")
    return cast(ChatRow, row)


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
    versions: bool = False,
) -> Page[Any]:
    """One page of the user's live chats (rows of :data:`CHAT_ANSWER_COLUMNS`), newest first
    (by creation or by activity).

    With ``versions``, the same page (its cursors the same) as rows of ``pk, row_version``
    first (read them by position): what a caller that keeps chats' answers by their version
    reads first. In the default order without a filter, the index alone answers it: no table
    page per chat."""
    params: dict[str, Any] = {"user_id": user_id}
    if flt.agent_identifier is not None:
        params["agent_identifier"] = flt.agent_identifier.value
    if flt.query:
        params["title_pattern"] = like_pattern(flt.query)
    return await read_page(db, _keyset(order, flt.shape, versions), page, params)


# ------------------------------------------------ what other aggregates keep on a chat
# Counters and flags of ``ai_chats`` that messages, notifications and schedules change:
# their statements live here, with the chat's others.

_COUNT_MESSAGE = (
    sa.update(ai_chats)
    .where(_c.pk == sa.bindparam("chat_pk"))
    .values(
        message_count=_c.message_count + 1,
        last_message_at=sa.bindparam("now"),
        activity_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
        **NEXT_VERSION,
    )
)
_UNCOUNT_MESSAGE = (
    sa.update(ai_chats)
    .where(_c.pk == sa.bindparam("chat_pk"))
    .values(message_count=_c.message_count - 1, updated_at=sa.bindparam("now"), **NEXT_VERSION)
)
_SET_ACTIVE_CRON = (
    sa.update(ai_chats).where(_c.pk == sa.bindparam("chat_pk")).values(has_active_cron=sa.bindparam("flag"))
)
_RAISE_BADGE = sa.update(ai_chats).where(_c.pk == sa.bindparam("chat_pk")).values(unread_count=_c.unread_count + 1)
_CLEAR_BADGE = sa.update(ai_chats).where(_c.pk == sa.bindparam("chat_pk")).values(unread_count=0)
_n = notifications.c
_RECOUNT_BADGES = (
    sa.update(ai_chats)
    .where(_c.user_id == sa.bindparam("user_id"))
    .values(
        unread_count=sa.select(sa.func.count())
        .where(_n.chat_pk == _c.pk, _n.read_at.is_(None), _n.kind == "ai_chat.reply")
        .scalar_subquery()
    )
)
_BADGES = sa.select(_c.id, _c.unread_count).where(
    _c.user_id == sa.bindparam("user_id"), _c.deleted_at.is_(None), _c.unread_count > 0
)


async def count_message(tx: Connection, chat_pk: int, now: int) -> None:
    """Count a message on its chat: ``message_count``, ``last_message_at``, activity."""
    await tx.execute(_COUNT_MESSAGE, {"chat_pk": chat_pk, "now": now})


_chat_pks = json_records("chats", pk=sa.BigInteger())
_COUNT_MESSAGES = (
    sa.update(ai_chats)
    .where(_c.pk == _chat_pks.c.pk)
    .values(
        message_count=_c.message_count + 1,
        last_message_at=sa.bindparam("now"),
        activity_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
        **NEXT_VERSION,
    )
)
_CLEAR_ACTIVE_CRONS = sa.update(ai_chats).where(_c.pk == _chat_pks.c.pk).values(has_active_cron=False)


def _pks_param(chat_pks: Sequence[int]) -> dict[str, str]:
    return {"chats": orjson.dumps([{"pk": pk} for pk in chat_pks]).decode()}


async def count_messages(tx: Connection, chat_pks: Sequence[int], now: int) -> None:
    """:func:`count_message` for many chats (each named once) in one statement."""
    if chat_pks:
        await tx.execute(_COUNT_MESSAGES, {**_pks_param(chat_pks), "now": now})


async def clear_active_crons(tx: Connection, chat_pks: Sequence[int]) -> None:
    """``has_active_cron`` off for many chats (their schedules ended) in one statement."""
    if chat_pks:
        await tx.execute(_CLEAR_ACTIVE_CRONS, _pks_param(chat_pks))


async def uncount_message(tx: Connection, chat_pk: int, now: int) -> None:
    """A counted message stops counting (a failed reply going back to pending)."""
    await tx.execute(_UNCOUNT_MESSAGE, {"chat_pk": chat_pk, "now": now})


async def set_active_cron(tx: Connection, chat_pk: int, active: bool) -> None:
    """Keep ``has_active_cron`` (the list filter) in step with the chat's schedule."""
    await tx.execute(_SET_ACTIVE_CRON, {"chat_pk": chat_pk, "flag": active})


async def raise_badge(tx: Connection, chat_pk: int) -> None:
    """One more unread reply on the chat's badge."""
    await tx.execute(_RAISE_BADGE, {"chat_pk": chat_pk})


async def clear_badge(tx: Connection, chat_pk: int) -> None:
    await tx.execute(_CLEAR_BADGE, {"chat_pk": chat_pk})


async def recount_badges(tx: Connection, user_id: str) -> None:
    """Every badge of the user's chats from their unread reply notifications."""
    await tx.execute(_RECOUNT_BADGES, {"user_id": user_id})


async def badges(db: Database, user_id: str) -> dict[str, int]:
    """Unread replies by chat id, for the user's live chats that have any."""
    return {row["id"]: row["unread_count"] for row in await db.fetch_all(_BADGES, {"user_id": user_id})}


# ------------------------------------------------------------ a reply's writes
# What a reply (:mod:`aichats.services.replies`) reads and changes of its chat.

_TURN_CHAT = sa.select(*CHAT_COLUMNS, _c.title_locked, _c.current_company_id, _c.deleted_at).where(
    _c.pk == sa.bindparam("chat_pk")
)
_CURRENT = sa.select(*CHAT_COLUMNS).where(_c.pk == sa.bindparam("chat_pk"))
_ADD_USAGE = (
    sa.update(ai_chats)
    .where(_c.pk == sa.bindparam("chat_pk"))
    .values(
        blended_token_usage_micros=_c.blended_token_usage_micros + sa.bindparam("blended_tokens_micros"),
        updated_at=sa.bindparam("now"),
        **NEXT_VERSION,
    )
    .returning(*CHAT_COLUMNS)
)
_SET_GENERATED_TITLE = (
    sa.update(ai_chats)
    .where(_c.pk == sa.bindparam("chat_pk"), _c.title.is_(None), _c.title_locked == sa.false())
    .values(title=sa.bindparam("title"), **NEXT_VERSION)
    .returning(*CHAT_COLUMNS)
)


async def chat_of_turn(db: Database | Connection, chat_pk: int) -> Row | None:
    """The chat as an agent turn is queued (by the scheduler, in its transaction) or starts:
    what the API shows, and what a turn needs besides (``title_locked``,
    ``current_company_id``, ``deleted_at``: deleted chats too)."""
    return await db.fetch_one(_TURN_CHAT, {"chat_pk": chat_pk})


async def current_chat(tx: Connection, chat_pk: int) -> Row:
    """The chat as it is now, in ``tx`` (the user may have muted it while a reply streamed)."""
    row = await tx.fetch_one(_CURRENT, {"chat_pk": chat_pk})
    assert row is not None
    return row


async def add_usage(tx: Connection, chat_pk: int, blended_tokens_micros: int, now: int) -> Row:
    """Add a reply's blended tokens to its chat, and to its user's usage of the day (what the
    daily token budget counts, :mod:`aichats.services.budgets`); the chat as it is now."""
    params = {"chat_pk": chat_pk, "blended_tokens_micros": blended_tokens_micros, "now": now}
    row = await tx.fetch_one(_ADD_USAGE, params)
    assert row is not None
    await budgets.add_usage(tx, row["user_id"], blended_tokens_micros, now)
    return row


async def set_generated_title(tx: Connection, chat_pk: int, title: str) -> Row | None:
    """Title a chat that has none and whose title the user never set; the chat, if titled."""
    return await tx.fetch_one(_SET_GENERATED_TITLE, {"chat_pk": chat_pk, "title": title})
