"""Security headers on every answer, in one place: a pure ASGI wrapper around the app.

- Every answer: ``X-Content-Type-Options: nosniff``, so that no browser runs an upload, a
  message or an error as a script or a page because it looks like one.
- API and session answers (``/api/``, ``/web/``): ``Cache-Control: no-store`` too, since
  they are one user's data: no shared or browser cache may keep them. The page and
  ``/static/*`` keep their own caching headers.

It wraps the whole middleware stack (see :class:`aichats.api.app.App`), so the 500s
that Starlette's outermost ``ServerErrorMiddleware`` sends carry the headers too. It only
appends to the response's start message, never touches bodies, so streams stream, and
its headers are precomputed bytes: about a microsecond per request. The operations that
:mod:`aichats.api.dispatch` runs itself get the same headers from :func:`secured`.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NOSNIFF = [(b"x-content-type-options", b"nosniff")]
_PRIVATE = [*_NOSNIFF, (b"cache-control", b"no-store")]
_NOSNIFF_NAMES = frozenset(name for name, _ in _NOSNIFF)
_PRIVATE_NAMES = frozenset(name for name, _ in _PRIVATE)
_PRIVATE_PREFIXES = ("/api/", "/web/")


def secured(headers: Iterable[tuple[bytes, bytes]], path: str) -> list[tuple[bytes, bytes]]:
    """An answer's headers with ours in place of any the handler set (an SSE stream's own
    Cache-Control, say; Starlette's responses name their headers in lower case)."""
    if path.startswith(_PRIVATE_PREFIXES):
        extra, names = _PRIVATE, _PRIVATE_NAMES
    else:
        extra, names = _NOSNIFF, _NOSNIFF_NAMES
    return [header for header in headers if header[0] not in names] + extra


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = secured(message.get("headers", ()), path)
            await send(message)

        await self.app(scope, receive, send_with_headers)
