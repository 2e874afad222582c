"""The ASGI application: routes, error handlers and the database's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from aichats.api import operations
from aichats.api.ai_chats import chat_answers
from aichats.api.auth_limit import FailedAuthLimit
from aichats.api.dispatch import OperationDispatch
from aichats.api.errors import EXCEPTION_HANDLERS
from aichats.api.headers import SecurityHeaders
from aichats.api.openapi import openapi_document
from aichats.api.rate_limit import RateLimiter
from aichats.api.registry import OPERATIONS
from aichats.api.responses import json_response
from aichats.config import Settings, get_settings
from aichats.observability import routes as observability
from aichats.observability.middleware import RequestObserver
from aichats.observability.shared import publishing
from aichats.runs.background import background
from aichats.services.budgets import Budgets
from aichats.services.events import EventHub
from aichats.services.keys import KEYS_CHANNEL, KeyCache
from aichats.services.notifications import LiveStates
from aichats.storage import database
from aichats.tools.operator import OperatorServers
from aichats.web.routes import routes as web_routes


class IdConvertor(StringConvertor):
    """A path id: any text but ``/`` and NUL. An id with a NUL names nothing that could
    exist (and PostgreSQL cannot compare it), so its route does not match: a 404, as for
    any unknown id, before a service or a query sees it."""

    regex = "[^/\x00]+"


register_url_convertor("id", IdConvertor())
log = logging.getLogger("aichats")


class AppState(State):
    """Starlette's ``app.state``, whose values are also plain attributes of the object.

    Starlette's ``State`` keeps them in a dict behind ``__getattr__``: a Python call, about
    0.5 µs, for each of the half dozen (the database, the settings, the key cache, the
    limits, the memo) that every API request reads. Here a read is an ordinary attribute
    lookup; writes and deletes keep both places the same.
    """

    def __setattr__(self, key: str, value: Any) -> None:
        super().__setattr__(key, value)
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        super().__delattr__(key)
        object.__delattr__(self, key)

    __setitem__ = __setattr__
    __delitem__ = __delattr__


class App(Starlette):
    """Starlette with our layers around its whole stack, outermost first:

    - :class:`~aichats.observability.middleware.RequestObserver`: request ids and metrics;
    - :class:`~aichats.api.dispatch.OperationDispatch`: the API's operations, run directly;
    - :class:`~aichats.api.headers.SecurityHeaders`: the security headers;
    - then Starlette's own stack: its ``ServerErrorMiddleware`` (500s), its exception
      handlers, and its router.

    Outside, not as Starlette middleware: that runs inside ``ServerErrorMiddleware``, whose
    500 answers would miss the ids, the counts and the headers.
    """

    def __init__(self, *, api_routes: list[Route], routes: list[BaseRoute], **options: Any) -> None:
        super().__init__(routes=[*api_routes, *routes], **options)
        self.state = AppState()
        self.api_routes = api_routes

    def build_middleware_stack(self) -> ASGIApp:
        return RequestObserver(OperationDispatch(SecurityHeaders(super().build_middleware_stack()), self.api_routes))


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.db = db = await database.connect(settings.database_url, pool_size=settings.postgres_pool_size)
        app.state.key_cache = KeyCache()
        await app.state.key_cache.attach(db)
        app.state.event_hub = EventHub()
        await app.state.event_hub.attach(db)
        app.state.user_hub = LiveStates(db)
        await app.state.user_hub.attach(db)
        app.state.key_hub = EventHub(KEYS_CHANNEL, str)  # ends a revoked key's open streams
        await app.state.key_hub.attach(db)
        per_minute = settings.rate_limit_per_minute
        app.state.rate_limiter = RateLimiter(db, per_minute) if per_minute else None
        app.state.budgets = Budgets(settings.token_budget_per_day)
        await app.state.budgets.attach(db)
        # The operator's tool servers, listed for the API and the workers alike (once each).
        app.state.operator_tool_servers = operator = OperatorServers(settings)
        try:
            # The agent workers, scheduler, webhook sender and housekeeping, supervised.
            async with (
                background(
                    db, settings, workers=settings.workers, housekeeping=True, api=True, operator=operator
                ) as supervisor,
                publishing(),  # --processes N: one set of metrics for all N (observability/shared.py)
            ):
                app.state.supervisor = supervisor  # /readyz asks it which services run
                yield  # background() froze what this lifespan made out of the collector's reach
        finally:
            await app.state.db.close()

    # The router tries routes in order: the API's (busiest first), then the others.
    routes: list[BaseRoute] = [
        Route("/healthz", observability.healthz, methods=["GET"]),
        *observability.routes(),  # /metrics, /readyz
        Route("/openapi.json", openapi, methods=["GET"]),
        *web_routes(),
    ]
    app = App(
        api_routes=operations.routes(OPERATIONS),
        routes=routes,
        lifespan=lifespan,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.settings = settings
    app.state.chat_answers = chat_answers()
    app.state.auth_limit = FailedAuthLimit(settings.auth_failures_per_minute)
    return app
