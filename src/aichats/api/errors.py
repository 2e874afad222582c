"""The error envelope: every failure answers ``{"error": {"type", "message"}}``.

Handlers here cover our own :class:`~aichats.errors.ServiceError`, Starlette's routing
errors (unknown route 404, wrong method 405) and anything unexpected (500, logged).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from aichats.errors import ServiceError

log = logging.getLogger("aichats.api")

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limit_exceeded",
}


def error_response(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": {"type": type_, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    headers = {"WWW-Authenticate": 'Bearer realm="aichats"'} if exc.status == 401 else exc.headers
    return error_response(exc.status, exc.type, exc.message, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers or {})
    if "Allow" in headers:  # Starlette joins a set of methods: the same answer every time, in order
        headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
    return error_response(exc.status_code, _HTTP_TYPES.get(exc.status_code, "error"), message, headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to answer; the request may be retried")


Handler = Callable[[Request, Exception], Awaitable[Response]]
# The app's exception handlers (``create_app``), which ``api/dispatch.py`` applies itself to
# the operations it runs: one mapping, so that both answer an error alike.
EXCEPTION_HANDLERS: dict[type[Exception], Handler] = {
    ServiceError: service_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}


def handler_for(error: Exception) -> Handler:
    """The handler Starlette picks for ``error``: that of the nearest class in its MRO."""
    for cls in type(error).__mro__:
        handler = EXCEPTION_HANDLERS.get(cls)
        if handler is not None:
            return handler
    return unexpected_error  # not reached: every Exception has Exception in its MRO
