"""Every HTTP request gets an id and is counted: a pure ASGI wrapper outside the whole app.

- **Request id.** A sane incoming ``X-Request-Id`` (a proxy's or a client's: 1 to 128
  letters, digits and ``-_.:=+/@``) is kept, any other is replaced by 16 random hex
  digits; the answer carries it back in ``X-Request-Id``, and every log line written
  while serving the request carries it too (:data:`aichats.observability.logs.request_id`).
- **Metrics.** The time from the request's arrival here to its answer's status and
  headers being sent, by route *template* (``/api/v1/ai_chats/{chat_id}``: ids in
  labels would make a series per chat), method and status, into
  :data:`aichats.observability.metrics.HTTP_REQUESTS`. A stream (SSE) counts the time
  until it opened, not how long it stayed open.

It wraps Starlette's ``ServerErrorMiddleware`` too (see :class:`aichats.api.app.App`), so
500s are counted and carry the id, and the ``unhandled error`` line they log names the
request. Its cost is measured by ``bench/metrics.py``: about 2 µs a request on the
shared test machine (a third of it the wrapper's layer itself), half what counting with
``prometheus_client``'s ``Histogram`` costs.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Awaitable
from itertools import repeat
from time import perf_counter
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aichats.observability.logs import request_id
from aichats.observability.metrics import HTTP_REQUESTS, Histogram

HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9\-_.:=+/@]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (404s)


# New request ids, made a thousand at a time (one urandom call, one hex conversion): taking
# one is a list pop. Each is 16 hex digits (64 random bits), with its header ready.
_fresh: list[tuple[str, tuple[bytes, bytes]]] = []
os.register_at_fork(after_in_child=_fresh.clear)  # a forked child makes ids of its own


def _new_ids() -> tuple[str, tuple[bytes, bytes]]:
    digits = os.urandom(8 * 1024).hex()
    idents = [digits[i : i + 16] for i in range(0, len(digits), 16)]
    _fresh.extend(zip(idents, zip(repeat(HEADER), map(str.encode, idents), strict=False), strict=True))
    return _fresh.pop()


def route_label(route: BaseRoute | None) -> str:
    """A route's path template without its convertors: ``/api/v1/ai_chats/{chat_id}``
    (a mount's: ``/static/{path}``)."""
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else UNMATCHED


class RequestObserver:
    """The ASGI wrapper: an id per request, and its answer counted in ``histogram``."""

    def __init__(self, app: ASGIApp, histogram: Histogram = HTTP_REQUESTS) -> None:
        self.app = app
        self.histogram = histogram
        # (id(route), method, status) -> the histogram's series for them, found once each.
        # By id: Starlette's routes are unhashable (they define __eq__), and they live as
        # long as the app.
        self._series: dict[tuple[int, str, int], list[Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ident = None
        for name, value in scope["headers"]:
            if name == HEADER:
                if _SANE_ID.fullmatch(value):
                    ident, id_header = value.decode(), (HEADER, value)
                break
        if ident is None:
            ident, id_header = _fresh.pop() if _fresh else _new_ids()
        token = request_id.set(ident)
        status = 0
        seconds = 0.0
        started = perf_counter()

        # Not a coroutine function: it hands back ``send``'s own awaitable, which saves a
        # coroutine per message.
        def send_observed(message: Message) -> Awaitable[None]:
            nonlocal status, seconds
            if message["type"] == "http.response.start":
                seconds = perf_counter() - started
                status = message["status"]
                # A new list: the one given may be a response's own, reused for another answer.
                message["headers"] = [*message.get("headers", ()), id_header]
            return send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            request_id.reset(token)
            if status:  # an answer was sent (a client that left before one is not counted)
                method = scope["method"]
                if method not in _METHODS:  # any token is a method: unknown ones share one label
                    method = "other"
                route = scope.get("route")
                series = self._series.get((id(route), method, status))
                if series is None:
                    series = self._series[(id(route), method, status)] = self._new_series(route, method, status)
                series[0] += seconds  # Histogram.observe, inlined: this runs for every request
                series[bisect_left(self.histogram.bounds, seconds) + 1] += 1

    def _new_series(self, route: BaseRoute | None, method: str, status: int) -> list[Any]:
        labels = (route_label(route), method, status)
        series = self.histogram.series.get(labels)
        if series is None:
            series = self.histogram.series[labels] = [0.0] + [0] * (len(self.histogram.bounds) + 1)
        return series
