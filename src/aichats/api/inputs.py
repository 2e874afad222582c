"""Reading request bodies and query strings into validated values.

Bodies are capped (413 past ``AICHATS_MAX_BODY_BYTES``) before they are parsed;
unparseable JSON is a 400, JSON that breaks the documented rules a 422.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from aichats.errors import BadRequest, Invalid, PayloadTooLarge
from aichats.services.pagination import PageRequest

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
    return value


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


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def query_bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return False
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise Invalid(f"`{name}` must be true or false")


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"`{name}` must be an integer") from None


def query_str(request: Request, name: str, max_length: int = 512) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise Invalid(f"`{name}` is longer than {max_length} characters")
    return raw


def page_request(request: Request) -> PageRequest:
    """``first``/``after``/``last``/``before`` from the query string (422 if out of range)."""
    return PageRequest(
        first=query_int(request, "first"),
        last=query_int(request, "last"),
        after=query_str(request, "after"),
        before=query_str(request, "before"),
    )
