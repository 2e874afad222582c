"""JSON answers, serialised with orjson."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import orjson
from starlette.responses import Response

from aichats.services.pagination import Page

T = TypeVar("T")


_JSON_TYPE = (b"content-type", b"application/json")


class JSONBytes(Response):
    """An answer of JSON already serialised: ``Response(body, status, media_type=
    "application/json")``, with its two headers written directly rather than through
    ``Response.init_headers``' general case (every API answer is one of these)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200) -> None:
        assert status >= 200 and status not in (204, 304), "an answer with a body"
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), _JSON_TYPE]


def json_response(value: object, status: int = 200) -> Response:
    return JSONBytes(orjson.dumps(value), status)


def page_json(page: Page[T], item_json: Callable[[T], object]) -> dict[str, object]:
    """A list's answer: ``{"data": [...], "page_info": {...}}``, each item as ``item_json`` writes it."""
    return {"data": [item_json(item) for item in page.items], "page_info": page.page_info.as_dict()}


class JSONMemo:
    """``item_json``'s answers, serialised, kept by a key that changes whenever they would.

    Building and serialising an item's JSON was a quarter of a list page's time under load
    (20 chats: 76 µs of dicts, instants and ``orjson``; ``bench/README.md``), and the rows
    that pages show repeat: a user's first page, read again and again. ``key`` gives, of a
    row, what names it and changes whenever a value that ``item_json`` reads changes (the
    values themselves, or a version that moves with them, as a chat's ``row_version``), so
    a changed row is a new key: an answer is never stale. A hit is the key and one dict
    lookup (about 0.5 µs); the kept answer is an ``orjson.Fragment``, written into the
    page's bytes as they are. :meth:`known` finds the answers of rows by their keys alone:
    a caller that can read the keys without the rows reads no more.

    At most ``size`` answers are kept; the oldest kept goes first (first in, first out). It
    is not thread-safe: the event loop's tasks share it, between awaits.
    """

    def __init__(self, item_json: Callable[[Any], object], key: Callable[[Any], Hashable], size: int) -> None:
        self.item_json = item_json
        self.key = key
        self.size = size
        self._kept: dict[Hashable, orjson.Fragment] = {}

    def __call__(self, row: Any) -> orjson.Fragment:
        key = self.key(row)
        fragment = self._kept.get(key)
        if fragment is None:
            # A copy: the bytes orjson returns keep its whole write buffer (4 KiB for a chat).
            fragment = orjson.Fragment(bytes(memoryview(orjson.dumps(self.item_json(row)))))
            if len(self._kept) >= self.size:
                del self._kept[next(iter(self._kept))]
            self._kept[key] = fragment
        return fragment

    def get(self, key: Hashable) -> orjson.Fragment | None:
        """The kept answer of the row of ``key`` (as ``key`` gives it), if any."""
        return self._kept.get(key)

    def known(self, keys: Iterable[Hashable]) -> list[orjson.Fragment] | None:
        """The kept answers of the rows of ``keys`` (as ``key`` gives them), in order; None
        unless every one is kept."""
        kept = self._kept
        answers = []
        for key in keys:
            fragment = kept.get(key)
            if fragment is None:
                return None
            answers.append(fragment)
        return answers

    def __len__(self) -> int:
        return len(self._kept)
