"""Keyset pagination in the GraphQL connection style (``first``/``after``, ``last``/``before``).

A cursor is the sort key of one row, base64url-encoded with the name of its order, so
a page is one indexed range scan however deep it is (never OFFSET), and rows inserted
or moved while a client walks the pages neither repeat nor vanish from a stable order.

Every paged list (chats, messages, runs, notifications) is a :class:`Keyset` read by
:func:`read_page`: this module is the only paging code.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import sqlalchemy as sa

from aichats import ids
from aichats.errors import Invalid
from aichats.storage.database import Connection, Database

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

T = TypeVar("T")
Key = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What the client asked for, validated: a window and a slice from one end of it."""

    first: int | None = None
    last: int | None = None
    after: str | None = None
    before: str | None = None

    def __post_init__(self) -> None:
        if self.first is not None and self.last is not None:
            raise Invalid("send either `first` or `last`, not both")
        for name in ("first", "last"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_PAGE_SIZE:
                raise Invalid(f"`{name}` must be between 1 and {MAX_PAGE_SIZE}")

    @property
    def backwards(self) -> bool:
        return self.last is not None

    @property
    def size(self) -> int:
        return self.last or self.first or DEFAULT_PAGE_SIZE


@dataclass(frozen=True, slots=True)
class PageInfo:
    start_cursor: str | None
    end_cursor: str | None
    has_next_page: bool
    has_previous_page: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "start_cursor": self.start_cursor,
            "end_cursor": self.end_cursor,
            "has_next_page": self.has_next_page,
            "has_previous_page": self.has_previous_page,
        }


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    page_info: PageInfo


def encode_cursor(order: str, key: Key) -> str:
    raw = order + ":" + ":".join(str(part) for part in key)
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def _key_part(text: str) -> int:
    """One part of a cursor's key (a pk or a time in milliseconds), as :func:`encode_cursor`
    writes it."""
    value = ids.parse_bigint(text)
    if value is None:
        raise ValueError(text)
    return value


def decode_cursor(order: str, cursor: str, parts: int, *, name: str) -> Key:
    """The sort key in ``cursor``; 422 if it is not one of ``order``'s cursors."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, *values = raw.split(":")
        key = tuple(_key_part(v) for v in values)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Invalid(f"`{name}` is not a cursor returned by this list") from None
    if kind != order or len(key) != parts:
        raise Invalid(f"`{name}` is not a cursor of this list and order")
    return key


def build_page(
    rows: Sequence[T],
    request: PageRequest,
    cursor_of: Callable[[T], str],
    *,
    more_before_window: bool,
    more_after_window: bool,
) -> Page[T]:
    """Turn ``size + 1`` fetched rows (in fetch direction) into a page in list order.

    ``more_before_window`` / ``more_after_window`` say whether rows exist beyond the
    ``after`` / ``before`` cursors: they answer the other direction's ``has_*_page``.
    """
    size = request.size
    overflow = len(rows) > size
    items = list(rows[:size])
    if request.backwards:
        items.reverse()
        has_previous, has_next = overflow, more_after_window
    else:
        has_previous, has_next = more_before_window, overflow
    info = PageInfo(
        start_cursor=cursor_of(items[0]) if items else None,
        end_cursor=cursor_of(items[-1]) if items else None,
        has_next_page=has_next,
        has_previous_page=has_previous,
    )
    return Page(items, info)


class Keyset:
    """A list read in pages: its rows (a select with its filters, unordered), its sort key
    in list order (the last column unique: a pk), and the name its cursors carry.

    ``descending`` lists (chats, runs, notifications) show the largest key first;
    ascending ones (messages) the smallest. ``forwards_only`` lists take ``first``/``after``
    alone: ``last`` is read as ``first`` and ``before`` is ignored, and
    ``has_previous_page`` is whether ``after`` was sent. Statements are built once per
    shape and kept (:func:`~aichats.storage.database.compile_statement` caches by identity).
    """

    def __init__(
        self,
        code: str,
        rows: sa.Select[Any],
        key: Sequence[sa.Column[Any]],
        *,
        descending: bool,
        forwards_only: bool = False,
    ) -> None:
        self.code = code
        self.key = tuple(key)
        self.names = tuple(column.key for column in self.key)
        self.descending = descending
        self.forwards_only = forwards_only
        self._rows = rows
        self._pages: dict[tuple[bool, bool, bool], sa.Select[Any]] = {}
        self._probes: dict[str, sa.Select[Any]] = {}

    def cursor(self, row: Mapping[str, Any]) -> str:
        return encode_cursor(self.code, tuple(row[name] for name in self.names))

    def _compared(self, side: str) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
        """The sort key as one comparable expression, and the cursor's binds (``after_0``...)."""
        binds: list[sa.BindParameter[Any]] = [sa.bindparam(f"{side}_{i}") for i in range(len(self.key))]
        if len(self.key) == 1:
            return self.key[0], binds[0]
        return sa.tuple_(*self.key), sa.tuple_(*binds)

    def _ordered(self, statement: sa.Select[Any], *, reverse: bool) -> sa.Select[Any]:
        descending = self.descending != reverse
        return statement.order_by(*(c.desc() if descending else c.asc() for c in self.key))

    def page_statement(self, after: bool, before: bool, backwards: bool) -> sa.Select[Any]:
        """Rows of one page: the window between the cursors, read from one end (``limit + 1``
        rows: the extra one says whether more follow)."""
        shape = (after, before, backwards)
        statement = self._pages.get(shape)
        if statement is None:
            statement = self._rows
            if after:  # rows past ``after`` in list order
                key, cursor = self._compared("after")
                statement = statement.where(key < cursor if self.descending else key > cursor)
            if before:  # rows short of ``before`` in list order
                key, cursor = self._compared("before")
                statement = statement.where(key > cursor if self.descending else key < cursor)
            statement = self._ordered(statement, reverse=backwards).limit(sa.bindparam("limit"))
            self._pages[shape] = statement
        return statement

    def beyond_statement(self, side: Literal["after", "before"]) -> sa.Select[Any]:
        """Whether any row lies on the far side of a cursor (the cursor's own row included):
        before ``after``, or past ``before``, in list order."""
        statement = self._probes.get(side)
        if statement is None:
            key, cursor = self._compared(side)
            if side == "after":
                condition = key >= cursor if self.descending else key <= cursor
            else:
                condition = key <= cursor if self.descending else key >= cursor
            # Ordered so that the probe is a range scan of the list's index, nearest row first.
            probe = self._rows.with_only_columns(self.key[-1]).where(condition)
            statement = self._ordered(probe, reverse=side == "after").limit(1)
            self._probes[side] = statement
        return statement


async def read_page(
    db: Database | Connection, keyset: Keyset, page: PageRequest, params: Mapping[str, Any]
) -> Page[Any]:
    """One page of ``keyset``'s list, ``params`` binding its filters: one query, and one
    probe more when a cursor's far side must be checked."""
    if keyset.forwards_only:
        page = PageRequest(first=page.size, after=page.after)
    binds: dict[str, Any] = {**params, "limit": page.size + 1}
    for side in ("after", "before"):
        cursor = getattr(page, side)
        if cursor is not None:
            for i, part in enumerate(decode_cursor(keyset.code, cursor, len(keyset.key), name=side)):
                binds[f"{side}_{i}"] = part
    statement = keyset.page_statement(page.after is not None, page.before is not None, page.backwards)
    rows = await db.fetch_all(statement, binds)
    if keyset.forwards_only:
        more_before, more_after = page.after is not None, False
    else:
        more_before = (
            page.after is not None
            and not page.backwards
            and await db.fetch_one(keyset.beyond_statement("after"), binds) is not None
        )
        more_after = (
            page.before is not None
            and page.backwards
            and await db.fetch_one(keyset.beyond_statement("before"), binds) is not None
        )
    return build_page(rows, page, keyset.cursor, more_before_window=more_before, more_after_window=more_after)
