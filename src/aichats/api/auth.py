"""Authentication and scope checks, called first by every API handler.

Two ways to present a key: ``Authorization: Bearer <key>`` (API clients), or the web
app's session cookie, which holds the key where page scripts cannot read it. A cookie is
sent by the browser on its own, so requests that change anything must also carry
:data:`WEB_HEADER`: a header no other site can make a browser send here (it would need a
CORS preflight, which this server never grants), which closes cross-site request forgery.

Every key check, the web sign-in's included, goes through :func:`authenticate_limited`:
a client address that failed too often gets 429 (see :mod:`aichats.api.auth_limit`).
"""

from __future__ import annotations

import ipaddress

from starlette.exceptions import HTTPException
from starlette.requests import Request

from aichats.api.auth_limit import FailedAuthLimit
from aichats.errors import Forbidden, Unauthorized
from aichats.services.keys import Principal, authenticate_hash, hash_key

SESSION_COOKIE = "aichats_session"
WEB_HEADER = "x-aichats-web"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def presented_key(request: Request) -> str:
    """The key this request presents, from its Authorization header or its session cookie."""
    header = None
    for name, value in request.scope["headers"]:  # as request.headers.get, without building them
        if name == b"authorization":
            header = value.decode("latin-1")
            break
    if header:
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        return secret
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    if request.method not in _SAFE_METHODS and WEB_HEADER not in request.headers:
        raise Forbidden(f"a request signed in by the session cookie must carry the {WEB_HEADER!r} header")
    return cookie


async def require(request: Request, scope: str) -> Principal:
    """The caller's principal if its key is live and carries ``scope``; else 401 / 403 / 429."""
    principal = await authenticate_limited(request, presented_key(request))
    if principal is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    if scope not in principal.scopes:
        raise Forbidden(f"the API key lacks the '{scope}' permission")
    return principal


def client_address(request: Request) -> str:
    """Whom the failure limit counts: the peer's IP, or the ``X-Forwarded-For`` one that
    uvicorn puts in its place when the peer is a trusted proxy (``FORWARDED_ALLOW_IPS``).
    An IPv6 client counts as its /64: one host usually holds a whole /64, and counting each
    address apart would give it billions of buckets."""
    peer = request.scope.get("client")  # request.client's host, without the namedtuple
    host: str = peer[0] if peer else ""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if address.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket: itself
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


async def authenticate_limited(request: Request, secret: str) -> Principal | None:
    """The principal of ``secret``, or None (a failure counted against the client).

    A client past :class:`~aichats.api.auth_limit.FailedAuthLimit` gets 429 without its
    key being looked up, unless the key was accepted recently.
    """
    state = request.app.state
    limit: FailedAuthLimit = state.auth_limit
    key_hash = hash_key(secret)  # once, for the limit and for the lookup
    if limit.blocking:
        wait = limit.retry_after(client_address(request), key_hash)
        if wait:
            raise HTTPException(
                429,
                f"too many attempts with invalid API keys from this address; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
    # A key the cache holds (the usual case) costs no await.
    principal = state.key_cache.cached(state.db, key_hash) or await authenticate_hash(
        state.db, key_hash, state.key_cache
    )
    if principal is None:
        limit.failed(client_address(request), key_hash)
    else:
        limit.accepted(key_hash)
    return principal
