"""JSON answers, serialised with orjson."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from starlette.responses import Response

from aichats.services.pagination import Page

T = TypeVar("T")


def json_response(value: object, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def page_json(page: Page[T], item_json: Callable[[T], object]) -> dict[str, object]:
    """A list's answer: ``{"data": [...], "page_info": {...}}``, each item as ``item_json`` writes it."""
    return {"data": [item_json(item) for item in page.items], "page_info": page.page_info.as_dict()}


class JSONMemo:
    """``item_json``'s answers, serialised, kept by the whole row they were made from.

    Building and serialising an item's JSON was a quarter of a list page's time under load
    (20 chats: 76 µs of dicts, instants and ``orjson``; ``bench/README.md``), and the rows
    that pages show repeat: a user's first page, read again and again. The key is every
    value of the row (``tuple(row)`` of a ``sqlite3.Row`` or an ``asyncpg.Record``), so a
    row that changed in any column is a new key: an answer is never stale, and
    ``item_json`` must read nothing but its row (nor tell apart values that Python holds
    equal, as ``1``, ``1.0`` and ``True``: a row's column has one type). A hit is one
    ``tuple`` and one dict lookup
    (about 0.5 µs); the kept answer is an ``orjson.Fragment``, written into the page's
    bytes as they are.

    At most ``size`` rows are kept; the oldest kept goes first (first in, first out).
    """

    def __init__(self, item_json: Callable[[Any], object], size: int) -> None:
        self.item_json = item_json
        self.size = size
        self._kept: dict[tuple[Any, ...], orjson.Fragment] = {}

    def __call__(self, row: Iterable[Any]) -> orjson.Fragment:
        key = tuple(row)
        fragment = self._kept.get(key)
        if fragment is None:
            # A copy: the bytes orjson returns keep its whole write buffer (4 KiB for a chat).
            fragment = orjson.Fragment(bytes(memoryview(orjson.dumps(self.item_json(row)))))
            if len(self._kept) >= self.size:
                del self._kept[next(iter(self._kept))]
            self._kept[key] = fragment
        return fragment

    def __len__(self) -> int:
        return len(self._kept)
