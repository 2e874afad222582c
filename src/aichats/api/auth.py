"""Bearer authentication and scope checks, called first by every API handler."""

from __future__ import annotations

from starlette.requests import Request

from aichats.errors import Forbidden, Unauthorized
from aichats.services.keys import Principal, authenticate


async def require(request: Request, scope: str) -> Principal:
    """The caller's principal if its key is live and carries ``scope``; else 401 / 403."""
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    principal = await authenticate(request.app.state.db, secret, request.app.state.key_cache)
    if principal is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    if scope not in principal.scopes:
        raise Forbidden(f"the API key lacks the '{scope}' permission")
    return principal
