"""Authentication and scope checks, called first by every API handler.

Two ways to present a key: ``Authorization: Bearer <key>`` (API clients), or the web
app's session cookie, which holds the key where page scripts cannot read it. A cookie is
sent by the browser on its own, so requests that change anything must also carry
:data:`WEB_HEADER`: a header no other site can make a browser send here (it would need a
CORS preflight, which this server never grants), which closes cross-site request forgery.
"""

from __future__ import annotations

from starlette.requests import Request

from aichats.errors import Forbidden, Unauthorized
from aichats.services.keys import Principal, authenticate

SESSION_COOKIE = "aichats_session"
WEB_HEADER = "x-aichats-web"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def presented_key(request: Request) -> str:
    """The key this request presents, from its Authorization header or its session cookie."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        return secret
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    if request.method not in _SAFE_METHODS and WEB_HEADER not in request.headers:
        raise Forbidden(f"a request signed in by the session cookie must carry the {WEB_HEADER!r} header")
    return secret


async def require(request: Request, scope: str) -> Principal:
    """The caller's principal if its key is live and carries ``scope``; else 401 / 403."""
    principal = await authenticate(request.app.state.db, presented_key(request), request.app.state.key_cache)
    if principal is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    if scope not in principal.scopes:
        raise Forbidden(f"the API key lacks the '{scope}' permission")
    return principal
