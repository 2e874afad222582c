"""Reading request bodies and query strings into validated values.

Bodies are capped (413 past ``AICHATS_MAX_BODY_BYTES``) before they are parsed;
unparseable JSON is a 400, JSON that breaks the documented rules a 422.

The cap is this reader's, not Starlette's ``max_body_size``: when a declared
``Content-Length`` is over the limit, Starlette's ``RequestBodyLimitMiddleware`` replaces
whatever answer the app starts (our 413 envelope, or a 401 sent before the body was read)
with its own plain-text ``Content Too Large``, at ``http.response.start``, where no
exception handler can put it in the error envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from aichats import ids
from aichats.errors import BadRequest, Invalid, PayloadTooLarge
from aichats.services.pagination import PageRequest

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in stream_body(request, limit)])


async def stream_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive (for parsers that consume a stream, like uploads'),
    with a 413 as soon as it declares or passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        length = ids.parse_bigint(declared)
        if length is None:
            raise BadRequest("Content-Length is not a number")
        if length > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        yield chunk


async def read_json(request: Request) -> Any:
    """The body as a JSON object (400 if it is not one)."""
    return parse_object(await read_body(request, request.app.state.settings.max_body_bytes))


def parse_object(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("the request body must be a JSON object")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object")
    # JSON can only spell NUL as the escape ``\u0000``, so one scan of the bytes clears
    # nearly every body; only a body holding the six characters is walked.
    if b"\\u0000" in body and (where := nul_in(value)) is not None:
        raise Invalid(f"{where} contains the NUL character (\\u0000), which text cannot hold; remove it")
    return value


def nul_in(value: Any, path: str = "") -> str | None:
    """Where in parsed JSON a string (or a field name) holds NUL, as ``ids.0``; else None.

    No text field can hold NUL: PostgreSQL refuses to store it (a 500) where SQLite
    keeps it, so both refuse it here, before any validation or query, with a 422."""
    if isinstance(value, str):
        return f"`{path}`" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return f"a field name in `{path}`" if path else "a field name"
            if (where := nul_in(item, f"{path}.{key}" if path else key)) is not None:
                return where
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (where := nul_in(item, f"{path}.{index}" if path else str(index))) is not None:
                return where
    return None


def validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def validate(model: type[M], value: Any) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise Invalid(validation_message(error)) from None


@lru_cache(maxsize=1024)
def _parameters(query_string: bytes) -> Mapping[str, str]:
    """A query string's parameters, the last value of a repeated name winning, as Starlette's
    ``request.query_params.get`` reads them; shared, never changed.

    Parsed once per distinct query string: the lists' are few (``first=20``) and repeat.
    Starlette's ``QueryParams``, built for every request, and its ``get`` (which raises and
    catches ``KeyError`` for every parameter not sent) were a tenth of a list page's time on
    PostgreSQL under load (py-spy)."""
    return dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def query_value(request: Request, name: str) -> str | None:
    """The query string's value of ``name`` (its last, if sent more than once), or None."""
    return _parameters(request.scope["query_string"]).get(name)


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def query_bool(request: Request, name: str) -> bool:
    raw = query_value(request, name)
    if raw is None or raw == "":
        return False
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise Invalid(f"`{name}` must be true or false")


def query_int(request: Request, name: str) -> int | None:
    raw = query_value(request, name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"`{name}` must be an integer") from None


def query_str(request: Request, name: str, max_length: int = 512) -> str | None:
    raw = query_value(request, name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise Invalid(f"`{name}` is longer than {max_length} characters")
    if "\x00" in raw:  # as in bodies: no text holds NUL (PostgreSQL cannot compare it)
        raise Invalid(f"`{name}` contains the NUL character (%00), which text cannot hold; remove it")
    return raw


def page_request(request: Request) -> PageRequest:
    """``first``/``after``/``last``/``before`` from the query string (422 if out of range)."""
    return PageRequest(
        first=query_int(request, "first"),
        last=query_int(request, "last"),
        after=query_str(request, "after"),
        before=query_str(request, "before"),
    )
