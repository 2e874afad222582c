"""The API's operations run by ``OperationDispatch`` answer exactly as through Starlette's
router, and everything it does not own still reaches the router."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichats.api import errors
from aichats.api.app import create_app
from aichats.api.dispatch import OperationDispatch
from aichats.config import Settings
from aichats.errors import NotFound
from tests.support.api import assert_private, create
from tests.support.servers import AppServer

pytestmark = pytest.mark.anyio

# A root_path (the transport puts it before the path): OperationDispatch leaves such requests to the router.
BASE = "/base"


def answer(server: AppServer, method: str, path: str, *, root_path: str = "", **options: Any) -> httpx2.Response:
    """``method path`` through the app in this process, under ``root_path``."""
    transport = httpx2.ASGITransport(server.app, raise_app_exceptions=False, root_path=root_path)

    async def call() -> httpx2.Response:
        async with httpx2.AsyncClient(transport=transport, base_url="http://aichats.test") as client:
            response = await client.request(method, path, **options)
            await response.aread()
            return response

    return server.portal.call(call)


MOVING = {"x-request-id", "ratelimit-remaining", "ratelimit-reset"}  # differ from one request to the next


def comparable(response: httpx2.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((name, value) for name, value in response.headers.multi_items() if name not in MOVING)
    return response.status_code, headers, response.content


def test_operations_answer_as_the_router_does(app_server: AppServer) -> None:
    account = app_server.account()
    with app_server.client(account) as api:
        chat = create(api)
    auth = account.headers
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/api/v1/ai_chats/{chat['id']}", {"headers": auth}),
        ("HEAD", f"/api/v1/ai_chats/{chat['id']}", {"headers": auth}),
        ("GET", "/api/v1/ai_chats/aich_nothing", {"headers": auth}),  # 404 from the service
        ("GET", "/api/v1/ai_chats?first=1", {"headers": auth}),
        ("GET", "/api/v1/ai_chats?first=0", {"headers": auth}),  # 422
        ("GET", "/api/v1/ai_chats", {}),  # 401, with WWW-Authenticate
        ("GET", "/api/v1/ai_chats", {"headers": {"Authorization": "Basic x"}}),  # 401
        ("POST", "/api/v1/ai_chats", {"headers": auth, "content": b"{nope"}),  # 400
        ("POST", "/api/v1/ai_chats", {"headers": auth, "json": {"message_text": ""}}),  # 422
        ("GET", f"/api/v1/ai_chats/{chat['id']}/messages?first=5", {"headers": auth}),
        ("GET", "/api/v1/notifications/badges", {"headers": auth}),
    ]
    for method, path, options in calls:
        direct = answer(app_server, method, path, **options)
        routed = answer(app_server, method, path, root_path=BASE, **options)
        assert comparable(direct) == comparable(routed), (method, path, direct.text, routed.text)
        assert_private(direct)
        assert direct.headers["x-request-id"]
    # A few of the answers themselves, so that the comparison compared something.
    assert answer(app_server, "GET", f"/api/v1/ai_chats/{chat['id']}", headers=auth).json() == chat
    assert answer(app_server, "HEAD", f"/api/v1/ai_chats/{chat['id']}", headers=auth).content == b""
    # What no operation declares is the router's: a method the path lacks, an unknown path.
    put = answer(app_server, "PUT", "/api/v1/ai_chats", headers=auth)
    assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD, POST"
    assert_private(put)
    assert answer(app_server, "GET", "/api/v1/nothing", headers=auth).status_code == 404


# ------------------------------------------------------------------ the layer alone


async def found(request: Request) -> Response:
    return Response(request.path_params.get("thing_id", "list"), headers={"cache-control": "max-age=60"})


async def missing(request: Request) -> Response:
    raise NotFound("no such thing")


async def broken(request: Request) -> Response:
    raise RuntimeError("broken on purpose")


ROUTES = [
    Route("/api/v1/things", found, methods=["GET"]),
    Route("/api/v1/things/{thing_id}", found, methods=["GET", "PATCH"]),
    Route("/api/v1/things/{thing_id}/missing", missing, methods=["GET"]),
    Route("/api/v1/things/{thing_id}/broken", broken, methods=["POST"]),
]


class Inner:
    """The rest of the stack: records what reaches it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append((scope["method"], scope["path"]))
        await Response("inner", status_code=418)(scope, receive, send)


async def call(
    app: Any, method: str, path: str, root_path: str = "", sent: list[dict[str, Any]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """An ASGI call of ``app``: the answer's status, headers and body (its messages in ``sent``)."""
    scope = {
        "type": "http", "method": method, "path": path, "root_path": root_path, "query_string": b"",
        "headers": [], "app": None,
    }  # fmt: skip
    sent = [] if sent is None else sent

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def test_the_layer_runs_declared_operations_and_passes_on_the_rest() -> None:
    inner = Inner()
    app = OperationDispatch(inner, ROUTES)
    status, headers, body = await call(app, "GET", "/api/v1/things/t_1")
    assert (status, body) == (200, b"t_1")
    # The security headers replace the endpoint's own caching.
    assert headers[b"cache-control"] == b"no-store" and headers[b"x-content-type-options"] == b"nosniff"
    assert (await call(app, "GET", "/api/v1/things"))[2] == b"list"
    assert (await call(app, "HEAD", "/api/v1/things/t_1"))[0] == 200  # HEAD where GET is
    status, headers, body = await call(app, "GET", "/api/v1/things/t_1/missing")
    assert status == 404 and b'"type":"not_found"' in body and headers[b"cache-control"] == b"no-store"
    assert inner.seen == []
    for method, path, root_path in [
        ("DELETE", "/api/v1/things/t_1", ""),  # a method the path lacks (the router's 405)
        ("GET", "/api/v1/things/t_1/broken", ""),
        ("GET", "/api/v1/other", ""),  # no such path
        ("GET", "/api/v1/things/", ""),  # a trailing slash (the router's redirect)
        ("GET", "/api/v1/things/a/b", ""),  # more segments than any route with ids
        ("GET", "/x/api/v1/things/t_1", "/x"),  # under a root_path
    ]:
        assert (await call(app, method, path, root_path))[0] == 418
        assert inner.seen[-1] == (method, path)


async def test_an_unexpected_error_is_answered_500_then_raised() -> None:
    """As Starlette's ServerErrorMiddleware does: the client gets the envelope, the server
    (uvicorn) gets the exception to log."""
    sent: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError, match="broken on purpose"):
        await call(OperationDispatch(Inner(), ROUTES), "POST", "/api/v1/things/t_1/broken", sent=sent)
    assert sent[0]["status"] == 500
    assert b'"type":"internal_error"' in sent[1]["body"]
    assert (b"cache-control", b"no-store") in sent[0]["headers"]


def test_an_error_gets_the_handler_starlette_would_pick() -> None:
    """Dispatch and the app read one mapping (``errors.EXCEPTION_HANDLERS``); the nearest
    class in an error's MRO picks, as in Starlette."""
    assert errors.handler_for(NotFound("x")) is errors.service_error
    assert errors.handler_for(HTTPException(404)) is errors.http_error
    assert errors.handler_for(KeyError("x")) is errors.unexpected_error
    assert create_app(Settings()).exception_handlers == errors.EXCEPTION_HANDLERS  # the app's own
