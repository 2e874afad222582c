"""What counting costs: the request observer (request id + metrics) per request, and the
model-stream timer per token, measured in this process with raw ASGI calls.

Usage (from the repository root)::

    .venv/bin/python bench/metrics.py [--calls 100000] [--rounds 7]

Each variant runs ``--calls`` requests per round, in turn with the others, for
``--rounds`` rounds (so a busy machine weighs on all alike); the median round is kept.
Times are the process's CPU time, so the other work of a shared machine counts less.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvloop
from common import warn_if_busy
from prometheus_client import CollectorRegistry
from prometheus_client import Histogram as PrometheusHistogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichats.agent.models import Usage
from aichats.api.headers import SecurityHeaders
from aichats.observability import metrics
from aichats.observability.logs import request_id
from aichats.observability.metrics import HTTP_BUCKETS, Histogram
from aichats.observability.middleware import RequestObserver, route_label

BODY = b'{"id": "aich_0mxbofft83kTq9ZbW1xYv0pLm", "title": "Weekly Revenue Analysis"}'
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
END = {"type": "http.response.body", "body": BODY}
# A retrieve as wrk sends it, as uvicorn hands it to the app.
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": "/api/v1/ai_chats/aich_0mxbofft83kTq9ZbW1xYv0pLm",
    "raw_path": b"/api/v1/ai_chats/aich_0mxbofft83kTq9ZbW1xYv0pLm",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", b"Bearer ak_abcdefghijklmnopqrstuvwxyz012345"),
        (b"user-agent", b"whop-sdk/0.0.41"),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
    ],
}
ROUTE = Route("/api/v1/ai_chats/{chat_id}", lambda request: None)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    return None


async def bare(scope: Any, receive: Any, send: Any) -> None:
    """The ceiling: an app that answers at once, as bench/api.py's bare app; it sets the
    matched route, as Starlette's router would, for the observers to label. Its messages
    are new ones each time: the observers add a header to the start message."""
    scope["route"] = ROUTE
    await send({**START, "headers": list(START["headers"])})  # new messages, as Starlette's responses send
    await send({**END})


class PrometheusObserver:
    """The alternative not taken: the same wrapper, counting with prometheus_client's own
    ``Histogram.labels(...).observe(...)``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.histogram = PrometheusHistogram(
            "bench_http_request_duration_seconds",
            "",
            ("route", "method", "status"),
            buckets=HTTP_BUCKETS,
            registry=CollectorRegistry(),
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ident = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                ident = value.decode()
                break
        if ident is None:
            ident = f"{time.perf_counter_ns():016x}"
        token = request_id.set(ident)
        answered: list[Any] = []
        started = time.perf_counter()
        id_header = (b"x-request-id", ident.encode())

        async def send_observed(message: Any) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])
                answered.append(time.perf_counter() - started)
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            request_id.reset(token)
            if answered:
                label = route_label(scope.get("route"))
                self.histogram.labels(label, scope["method"], str(answered[0])).observe(answered[1])


async def endpoint(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


def starlette_app() -> Any:
    """A Starlette app of one route, with the security headers outside (error handling inside)."""
    return SecurityHeaders(Starlette(routes=[Route("/api/v1/ai_chats/{chat_id}", endpoint, methods=["GET"])]))


# CPU time of this process, not wall time: on a machine shared with other work, the time
# this process waited for a core is not counted (its caches still suffer).
clock = time.process_time


async def rate(app: Callable[[Any, Any, Any], Awaitable[None]], calls: int) -> float:
    """Microseconds per call of ``app`` (a fresh scope each: apps write into it)."""
    scope = SCOPE
    started = clock()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    return (clock() - started) / calls * 1e6


async def tokens(stream: Callable[[], AsyncIterator[Any]], count: int) -> float:
    """Microseconds per item of reading ``stream()`` whole."""
    started = clock()
    async for _ in stream():
        pass
    return (clock() - started) / count * 1e6


async def run(calls: int, rounds: int) -> None:
    ours_bare = RequestObserver(bare, Histogram("bench", "", ("route", "method", "status"), HTTP_BUCKETS))
    variants: dict[str, Any] = {
        "bare ASGI app (ceiling)": bare,
        "+ RequestObserver (ours)": ours_bare,
        "+ prometheus_client Histogram": PrometheusObserver(bare),
        "Starlette app, one route": starlette_app(),
        "Starlette app + RequestObserver": RequestObserver(starlette_app()),
    }
    for app in variants.values():  # warm-up (and Starlette's lifespan-less stack built)
        await rate(app, 2_000)
    figures: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, app in variants.items():
            figures[name].append(await rate(app, calls))
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"{calls:,} calls a round, {rounds} rounds; median µs per request (min-max):")
    for name, values in figures.items():
        print(f"  {name:<34} {median[name]:>6.2f}  ({min(values):.2f}-{max(values):.2f})")
    ceiling = median["bare ASGI app (ceiling)"]
    ours = median["+ RequestObserver (ours)"] - ceiling
    theirs = median["+ prometheus_client Histogram"] - ceiling
    in_app = median["Starlette app + RequestObserver"] - median["Starlette app, one route"]
    print(f"  RequestObserver adds {ours:.2f} µs a request ({median['+ RequestObserver (ours)'] / ceiling:.2f}x the "
          f"bare app); with prometheus_client's Histogram: {theirs:.2f} µs ({theirs / ours:.2f}x ours)")  # fmt: skip
    print(f"  in a Starlette app: +{in_app:.2f} µs on {median['Starlette app, one route']:.2f} µs "
          f"({in_app / median['Starlette app, one route']:.1%})")  # fmt: skip

    count = 100_000
    usage = Usage(10, count)

    async def plain() -> AsyncIterator[Any]:
        for _ in range(count):
            yield "token"
        yield usage

    def timed() -> AsyncIterator[Any]:
        return metrics.timed_stream("bench:model", plain())

    stream_figures: dict[str, list[float]] = {"model stream": [], "+ timed_stream": []}
    for _ in range(rounds):
        stream_figures["model stream"].append(await tokens(plain, count))
        stream_figures["+ timed_stream"].append(await tokens(timed, count))
    plain_us, timed_us = (statistics.median(values) for values in stream_figures.values())
    print(f"model stream of {count:,} tokens: {plain_us:.2f} µs a token bare, {timed_us:.2f} with timed_stream: "
          f"+{timed_us - plain_us:.2f} µs a token")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See bench/README.md.")
    parser.add_argument("--calls", type=int, default=100_000, help="requests per round (default: 100,000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant (default: 7)")
    args = parser.parse_args()
    warn_if_busy()
    uvloop.run(run(args.calls, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
