"""Keyset pagination in the GraphQL connection style (``first``/``after``, ``last``/``before``).

A cursor is the sort key of one row, base64url-encoded with the name of its order, so
a page is one indexed range scan however deep it is (never OFFSET), and rows inserted
or moved while a client walks the pages neither repeat nor vanish from a stable order.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aichats import ids
from aichats.errors import Invalid

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


async def newest_first(
    db: Any, first: Any, after: Any, params: dict[str, Any], page: PageRequest, code: str
) -> Page[Any]:
    """A page of a list read newest first by ``pk``, forwards only (``first``/``after``).

    ``first`` reads from the newest row; ``after`` is the same query bound by ``pk < after_0``.
    """
    params = {**params, "limit": page.size + 1}
    statement = first
    if page.after is not None:
        params["after_0"] = decode_cursor(code, page.after, 1, name="after")[0]
        statement = after
    rows = await db.fetch_all(statement, params)
    return build_page(
        rows,
        PageRequest(first=page.size),
        lambda row: encode_cursor(code, (row["pk"],)),
        more_before_window=page.after is not None,
        more_after_window=False,
    )
