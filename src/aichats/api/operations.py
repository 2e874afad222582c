"""The HTTP surface, declared once: each operation says its method, path, permission, body,
answer and errors in one :class:`Operation`, and everything else comes from that.

- :func:`routes` makes the Starlette routes: one per path, carrying all its methods (so a
  405 lists every method of the path in ``Allow``), in the order the operations are listed.
- The route's endpoint authenticates, reads and validates the body, and calls the handler
  with a :class:`Call` that holds what the handler needs: handlers stay a few lines of
  service calls and serialisation.
- :mod:`aichats.api.openapi` writes the OpenAPI document from the same declarations.

The list of operations, in the router's order, is :data:`aichats.api.registry.OPERATIONS`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichats.api.auth import require
from aichats.api.errors import service_error
from aichats.api.inputs import parse_object, read_body, read_json, validate
from aichats.api.rate_limit import RateLimiter
from aichats.config import Settings
from aichats.errors import ServiceError
from aichats.services import chats
from aichats.services.chats import ChatRow
from aichats.services.keys import Principal
from aichats.services.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from aichats.storage.database import Connection, Database

API = "/api/v1"


@dataclass(slots=True)
class Call:
    """What a handler is given: the caller, the database, the validated body, the settings,
    and the request itself (path ids, query string, headers)."""

    request: Request
    principal: Principal
    db: Database
    settings: Settings
    body: Any  # the operation's body model, validated; None for an operation without a JSON body
    json: Any  # that body as parsed JSON (what an idempotency fingerprint hashes); None without one

    def path(self, name: str) -> str:
        """A path id (``chat_id``, ``message_id``, ``webhook_id``)."""
        value: str = self.request.path_params[name]
        return value

    async def chat(self) -> ChatRow:
        """The caller's chat named by the path's ``chat_id`` (404 if it is not theirs, or deleted)."""
        return await chats.get_chat(self.db, self.principal.user_id, self.path("chat_id"))

    async def check_budget(self, tx: Connection | None = None) -> None:
        """Refuse a new agent turn (429 ``token_budget_exceeded``) while the caller is over their
        daily token budget. Called by the handlers of ``turn`` operations, first; in the
        handler rather than the endpoint so that a create repeated with its
        ``Idempotency-Key`` still replays its first answer."""
        await self.request.app.state.budgets.check(self.db, self.principal.user_id, tx)


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Stream:
    """An answer that is a server-sent event stream: what its events' ``event`` field holds,
    and whether each has an ``id`` to resume after."""

    event: dict[str, Any]
    with_id: bool


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the API, as the router, the handler and the document see it."""

    method: str
    path: str  # under /api/v1, as OpenAPI writes it: /ai_chats/{chat_id}
    operation_id: str
    summary: str
    scope: str  # the permission the caller's key must carry
    tag: str
    handler: Handler
    response: type[BaseModel] | dict[str, Any] | Stream  # the 2xx answer's schema
    response_description: str
    status: int = 200
    errors: tuple[int, ...] = ()  # besides 401, 403 and 429, which every operation may answer
    body: type[BaseModel] | None = None  # a JSON object body, validated before the handler runs
    body_required: bool = True  # False: an empty body is the model's defaults
    form: dict[str, Any] | None = None  # a multipart body's schema; the handler reads that body itself
    parameters: tuple[dict[str, Any], ...] = ()  # query and header parameters, as OpenAPI writes them
    exclusive: tuple[tuple[str, ...], ...] = ()  # groups of parameters that exclude each other
    # It starts an agent turn: its handler calls :meth:`Call.check_budget` first (429 while the
    # user is over their daily token budget), and the OpenAPI document says so.
    turn: bool = False


def operation(
    method: str,
    path: str,
    operation_id: str,
    *,
    summary: str,
    scope: str,
    tag: str,
    response: type[BaseModel] | dict[str, Any] | Stream,
    response_description: str,
    status: int = 200,
    errors: tuple[int, ...] = (),
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    form: dict[str, Any] | None = None,
    parameters: Iterable[dict[str, Any]] = (),
    exclusive: tuple[tuple[str, ...], ...] = (),
    turn: bool = False,
) -> Callable[[Handler], Operation]:
    """Declare the decorated handler's operation (the decorator returns the :class:`Operation`)."""

    def declare(handler: Handler) -> Operation:
        return Operation(
            method=method,
            path=path,
            operation_id=operation_id,
            summary=summary,
            scope=scope,
            tag=tag,
            handler=handler,
            response=response,
            response_description=response_description,
            status=status,
            errors=errors,
            body=body,
            body_required=body_required,
            form=form,
            parameters=tuple(parameters),
            exclusive=exclusive,
            turn=turn,
        )

    return declare


async def _optional_json(request: Request, settings: Settings) -> Any:
    """A body that may be left out: empty (or blank) is ``{}``, the model's defaults."""
    raw = await read_body(request, settings.max_body_bytes)
    return parse_object(raw) if raw.strip() else {}


def _endpoint(operations: dict[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
    """One path's endpoint: the operation of the request's method, with its arguments.

    Every operation answers in the same order: the key first (401/403/429), then the key's
    rate limit (429, :mod:`aichats.api.rate_limit`), then the body (400/413/422), then the
    handler (for an operation that starts a turn, the user's token budget first: 429; then
    404 and the rest). A bodiless GET costs a dict lookup and the :class:`Call`: no model,
    no extra await; the rate limit, a dict lookup too, as long as this process's block lasts.
    Every answer of an admitted request carries its ``RateLimit-*`` headers, errors included."""
    if "GET" in operations:
        operations = {**operations, "HEAD": operations["GET"]}

    async def endpoint(request: Request) -> Response:
        op = operations[request.method]
        principal = await require(request, op.scope)
        state = request.app.state
        settings: Settings = state.settings
        limiter: RateLimiter | None = state.rate_limiter
        limited = None
        if limiter is not None:
            key_id, operation_id = principal.key_id, op.operation_id
            limited = limiter.take(key_id, operation_id) or await limiter.admit(key_id, operation_id)
        try:
            body = parsed = None
            if op.body is not None:
                parsed = await read_json(request) if op.body_required else await _optional_json(request, settings)
                body = validate(op.body, parsed)
            response = await op.handler(Call(request, principal, state.db, settings, body, parsed))
        except ServiceError as error:  # admitted, and counted: the error tells what is left too
            response = await service_error(request, error)
        if limited is not None:
            response.raw_headers.extend(limited)
        return response

    return endpoint


_PATH_ID = re.compile(r"\{(\w+)\}")


def routes(operations: Iterable[Operation]) -> list[Route]:
    """One route per path, in the order each path's first operation comes (the busiest first:
    the router tries routes in order). Path ids take the ``id`` convertor (no ``/``, no NUL)."""
    by_path: dict[str, dict[str, Operation]] = {}
    for op in operations:
        methods = by_path.setdefault(op.path, {})
        assert op.method not in methods, f"{op.method} {op.path} is declared twice"
        methods[op.method] = op
    return [
        Route(API + _PATH_ID.sub(r"{\1:id}", path), _endpoint(methods), methods=list(methods), name=path)
        for path, methods in by_path.items()
    ]


# ------------------------------------------------------------------- parameters shared by operations


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "Retrying with the same key and body returns the first answer and creates nothing new "
    "(for 24 hours by default); the same key with another body is refused with 422.",
}

_PAGE_SIZE = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}
# OpenAPI cannot relate two parameters: the operations that take both say so in
# ``x-mutually-exclusive-parameters`` (and in the parameters' descriptions); the server answers 422.
FIRST_OR_LAST = (("first", "last"),)


def paging(*, backwards: bool) -> list[dict[str, Any]]:
    """The paging query parameters, flat as in the reference API: ``first``/``after`` and, for the
    lists that also read backwards, ``last``/``before`` (which ``first`` excludes)."""
    forwards = f"Page size, reading forwards (default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE})."
    parameters = [
        query("first", _PAGE_SIZE, forwards + (" Not with `last`." if backwards else "")),
        query("after", {"type": "string"}, "Cursor: return items after this one (`page_info.end_cursor`)."),
    ]
    if backwards:
        parameters += [
            query(
                "last",
                _PAGE_SIZE,
                f"Page size, reading backwards from `before` (at most {MAX_PAGE_SIZE}). Not with `first`.",
            ),
            query("before", {"type": "string"}, "Cursor: return items before this one (`page_info.start_cursor`)."),
        ]
    return parameters


TRUE = {"type": "boolean", "const": True}  # the answer of a delete, or of marking a chat read
