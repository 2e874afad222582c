"""Routes of the web app: the page, its assets, and the sign-in session."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from aichats.api.auth import SESSION_COOKIE, WEB_HEADER, authenticate_limited, require
from aichats.api.inputs import read_json, validate
from aichats.api.responses import json_response
from aichats.errors import Forbidden, Unauthorized
from aichats.services.keys import Principal

STATIC_DIR = Path(__file__).parent / "static"
# The page runs only its own scripts and styles and talks only to this server: a message
# or title that slipped past escaping still could not load or run anything.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",  # frame-ancestors 'none' for browsers that predate it
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: str = Field(min_length=1, max_length=200)


def _session_json(principal: Principal) -> Response:
    return json_response({"user_id": principal.user_id, "key_id": principal.key_id, "scopes": sorted(principal.scopes)})


async def page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def sign_in(request: Request) -> Response:
    """Check the key, then hand it back as a cookie that page scripts cannot read.

    The cookie is ``Secure`` (browsers accept that over plain http only on localhost, so
    anywhere else the app must be served over https), ``SameSite=Strict`` and lasts for the
    browser session.
    """
    if WEB_HEADER not in request.headers:
        raise Forbidden(f"sign in from the web app (the {WEB_HEADER!r} header is missing)")
    data = validate(SignIn, await read_json(request))
    secret = data.api_key.strip()
    principal = await authenticate_limited(request, secret)
    if principal is None:
        raise Unauthorized("that API key is not valid: it is unknown or has been revoked")
    response = _session_json(principal)
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, secure=True, samesite="strict", path="/")
    return response


async def current(request: Request) -> Response:
    return _session_json(await require(request, "ai_chat:read"))


async def sign_out(request: Request) -> Response:
    response = json_response(True)
    response.delete_cookie(SESSION_COOKIE, httponly=True, secure=True, samesite="strict", path="/")
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/", page, methods=["GET"]),
        Route("/web/session", current, methods=["GET"]),
        Route("/web/session", sign_in, methods=["POST"]),
        Route("/web/session", sign_out, methods=["DELETE"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
