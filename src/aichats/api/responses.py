"""JSON answers, serialised with orjson."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import orjson
from starlette.responses import Response

from aichats.services.pagination import Page

T = TypeVar("T")


def json_response(value: object, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def page_json(page: Page[T], item_json: Callable[[T], object]) -> dict[str, object]:
    """A list's answer: ``{"data": [...], "page_info": {...}}``, each item as ``item_json`` writes it."""
    return {"data": [item_json(item) for item in page.items], "page_info": page.page_info.as_dict()}
