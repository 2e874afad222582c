"""``GET /metrics`` and ``GET /readyz``, for ``aichats serve`` and for the small HTTP
endpoint of ``aichats worker --metrics-port`` (:func:`worker_endpoint`).

``/metrics`` is not public by default. Without ``AICHATS_METRICS_TOKEN`` it answers only
clients on a loopback address (a Prometheus or an agent on the same machine); others get
403. With the token, every client, loopback included, must send ``Authorization: Bearer
<token>`` (401 otherwise). The client's address is the one uvicorn gives the app: the
TCP peer's, or the ``X-Forwarded-For`` one when the peer is a trusted proxy
(``FORWARDED_ALLOW_IPS``), the address :func:`aichats.api.auth.client_address` counts too.

``/readyz`` says whether this process can do its work: the database answers, and every
background service (agent workers, scheduler, webhook sender, housekeeping) is running.
A process with ``AICHATS_WORKERS=0`` has no workers to check, which is fine.
``/healthz`` stays the cheap liveness check (the process and its database answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichats.api.errors import error_response, http_error
from aichats.api.responses import json_response
from aichats.config import Settings
from aichats.observability import gauges, shared
from aichats.observability.metrics import Collector
from aichats.runs.supervisor import Supervisor
from aichats.storage.database import Database

log = logging.getLogger("aichats.metrics")

READY_SECONDS = 2.0  # the database must answer /readyz's query within this
_PING = sa.select(sa.literal(1).label("ok"))


# ------------------------------------------------------------------ who may read /metrics


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    type: str
    message: str
    headers: dict[str, str] | None = None


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1, or an IPv4 one mapped into IPv6)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def metrics_refusal(client_host: str | None, authorization: str | None, token: str | None) -> Refusal | None:
    """Why a request for ``/metrics`` is refused, or None when it may read them."""
    if token is None:
        if is_loopback(client_host):
            return None
        return Refusal(
            403,
            "forbidden",
            "/metrics answers only clients on this machine (loopback); "
            "set AICHATS_METRICS_TOKEN to scrape it from elsewhere with that bearer token",
        )
    scheme, _, presented = (authorization or "").partition(" ")
    # compare_digest on bytes: constant time whatever the presented value (any characters, any length).
    if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
        return None
    return Refusal(
        401,
        "unauthorized",
        "/metrics needs 'Authorization: Bearer <AICHATS_METRICS_TOKEN>'",
        {"WWW-Authenticate": 'Bearer realm="aichats-metrics"'},
    )


# ------------------------------------------------------------------ the endpoints


async def metrics_endpoint(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    refusal = metrics_refusal(
        request.client.host if request.client else None, request.headers.get("authorization"), token
    )
    if refusal is not None:
        return error_response(refusal.status, refusal.type, refusal.message, refusal.headers)
    return Response(await exposition(request.app.state.db), media_type=CONTENT_TYPE_PLAIN_0_0_4)


async def exposition(db: Database) -> bytes:
    """The metrics in Prometheus' text format: the counted ones (this process's, or all of
    one ``serve``'s processes'), the database's gauges, and, for a process on its own, its
    ``process_*`` figures (CPU, memory, open files) from ``prometheus_client``."""
    extra: list[Metric] = await gauges.read(db)
    counted, processes = shared.counted()
    summed = GaugeMetricFamily(
        "aichats_metrics_processes", "Processes whose counts these metrics add up (ended ones included)."
    )
    summed.add_metric([], processes)
    extra.append(summed)
    if shared.shared_dir() is None:  # one process's CPU and memory mean nothing summed with its siblings'
        extra += ProcessCollector(registry=None).collect()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(counted, extra))
    return generate_latest(registry)


async def not_ready(db: Database, supervisor: Supervisor | None) -> list[str]:
    """What keeps this process from being ready; empty when it is."""
    problems = []
    try:
        async with asyncio.timeout(READY_SECONDS):
            await db.fetch_one(_PING)
    except Exception as error:  # its message may name hosts: logged, not answered
        log.warning("readiness: the database did not answer: %s: %s", type(error).__name__, error)
        problems.append(f"the database did not answer within {READY_SECONDS:g} s ({type(error).__name__})")
    if supervisor is None:
        problems.append("the background services have not started")
    else:
        down = supervisor.not_running()
        if down:
            problems.append(f"background services not running: {', '.join(down)}")
    return problems


async def readyz(request: Request) -> Response:
    state = request.app.state
    supervisor: Supervisor | None = getattr(state, "supervisor", None)
    problems = await not_ready(state.db, supervisor)
    if problems:
        return error_response(503, "not_ready", "; ".join(problems))
    assert supervisor is not None  # else a problem
    return json_response({"status": "ready", "services": [service.name for service in supervisor.services]})


async def healthz(request: Request) -> Response:
    await request.app.state.db.fetch_one(_PING)
    return json_response({"status": "ok"})


def routes() -> list[Route]:
    """The routes ``aichats serve`` adds: ``/metrics`` and ``/readyz``."""
    return [Route("/metrics", metrics_endpoint, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]


# ------------------------------------------------------------------ aichats worker's endpoint


def worker_app(db: Database, settings: Settings, supervisor: Supervisor) -> Starlette:
    """``/metrics``, ``/readyz`` and ``/healthz`` of an ``aichats worker`` process."""
    app = Starlette(
        routes=[*routes(), Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={HTTPException: http_error},
    )
    app.state.db, app.state.settings, app.state.supervisor = db, settings, supervisor
    return app


@contextlib.asynccontextmanager
async def worker_endpoint(
    db: Database, settings: Settings, supervisor: Supervisor, host: str, port: int | None
) -> AsyncIterator[None]:
    """Serve :func:`worker_app` on ``host:port`` while in the block (nothing when ``port`` is None).

    uvicorn catches SIGINT and SIGTERM while it serves, stops, and then raises the signal
    again for the process's own handlers: the worker stops as it would without it.
    """
    if port is None:
        yield
        return
    import uvicorn

    try:  # bound here, not by uvicorn: a port in use is one clear line, not uvicorn's exit from a task
        listening = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as error:
        raise SystemExit(f"aichats worker: cannot serve --metrics-port on {host}:{port}: {error}") from None
    config = uvicorn.Config(
        worker_app(db, settings, supervisor), host=host, port=port, lifespan="off", access_log=False, log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]), name="aichats-worker-endpoint")
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    log.info("serving /metrics, /readyz and /healthz on %s:%s", host, port)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait([task])
