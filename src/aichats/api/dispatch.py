"""The API's operations, handed straight to their endpoints.

Starlette finds a route by trying every route's regex in order, and runs its endpoint
inside four more layers (the security headers, its error middleware, its exception
handlers, then ``request_response``), each adding a wrapper around ``send``. For the
API's own routes that was a fifth of what a retrieve cost once the key is cached
(``bench/README.md``). Here a path without ids is one dict lookup, a path with ids one
regex per route with as many segments, and the endpoint runs in this layer, which gives
its answer the same headers and error answers those layers would.

Only what is certain to answer the same is taken here: a path and a method that an
operation declares, with no ``root_path``. Everything else (unknown paths, a method the
path lacks: the 404 and 405 with ``Allow``, the redirects of a trailing slash, the web
app, ``/metrics``) goes on to Starlette's stack unchanged.

An endpoint's error gets the answer of the app's handler for it
(:data:`aichats.api.errors.EXCEPTION_HANDLERS`): a :class:`~aichats.errors.ServiceError`'s
or an ``HTTPException``'s envelope; anything else the logged 500 of
:func:`~aichats.api.errors.unexpected_error`, and is raised on, as Starlette's
``ServerErrorMiddleware`` does, for the server to log too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aichats.api.errors import handler_for, unexpected_error
from aichats.api.headers import secured


class _Target(NamedTuple):
    route: Route
    methods: frozenset[str]  # HEAD included where GET is
    endpoint: Callable[[Request], Awaitable[Response]]


class OperationDispatch:
    """An ASGI wrapper around the app's whole stack that runs the endpoints of ``routes``
    itself (inside :class:`~aichats.observability.middleware.RequestObserver`)."""

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.static: dict[str, _Target] = {}  # a path without ids -> its route
        self.templated: dict[int, list[_Target]] = {}  # a path's "/" count -> its routes with ids, in order
        for route in routes:
            target = _Target(route, frozenset(route.methods or ()), route.endpoint)
            if route.param_convertors:
                self.templated.setdefault(route.path.count("/"), []).append(target)
            else:
                self.static[route.path] = target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        target = self.static.get(path)
        params: dict[str, str] = {}
        if target is None:
            for candidate in self.templated.get(path.count("/"), ()):
                match = candidate.route.path_regex.match(path)
                if match:
                    target, params = candidate, match.groupdict()  # the id convertor converts nothing
                    break
        if target is None or scope["method"] not in target.methods:
            await self.app(scope, receive, send)
            return
        scope["route"], scope["endpoint"], scope["path_params"] = target.route, target.endpoint, params
        request = Request(scope, receive, send)
        failure = None
        try:
            response = await target.endpoint(request)
        except Exception as error:
            handler = handler_for(error)
            response = await handler(request, error)
            if handler is unexpected_error:
                failure = error
        response.raw_headers = secured(response.raw_headers, path)
        await response(scope, receive, send)
        if failure is not None:
            raise failure
