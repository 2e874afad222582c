"""Security headers on every answer, in one place: a pure ASGI wrapper around the app.

- Every answer: ``X-Content-Type-Options: nosniff``, so that no browser runs an upload, a
  message or an error as a script or a page because it looks like one.
- API and session answers (``/api/``, ``/web/``): ``Cache-Control: no-store`` too, since
  they are one user's data: no shared or browser cache may keep them. The page and
  ``/static/*`` keep their own caching headers.

It wraps the whole middleware stack (see :class:`SecuredStarlette`), so the 500s that
Starlette's outermost ``ServerErrorMiddleware`` sends carry the headers too. It only
appends to the response's start message, never touches bodies, so streams stream, and
its headers are precomputed bytes: about a microsecond per request.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NOSNIFF = [(b"x-content-type-options", b"nosniff")]
_PRIVATE = [*_NOSNIFF, (b"cache-control", b"no-store")]
_NOSNIFF_NAMES = frozenset(name for name, _ in _NOSNIFF)
_PRIVATE_NAMES = frozenset(name for name, _ in _PRIVATE)
_PRIVATE_PREFIXES = ("/api/", "/web/")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(_PRIVATE_PREFIXES):
            extra, names = _PRIVATE, _PRIVATE_NAMES
        else:
            extra, names = _NOSNIFF, _NOSNIFF_NAMES

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Ours replace any the handler set (an SSE stream's own Cache-Control, say);
                # Starlette's responses name their headers in lower case.
                kept = [header for header in message.get("headers", ()) if header[0] not in names]
                message["headers"] = kept + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SecuredStarlette(Starlette):
    """Starlette with :class:`SecurityHeaders` outside its whole stack, error handling included.

    Middleware given to Starlette runs inside ``ServerErrorMiddleware``, which sends the
    500 answer with the original ``send``: headers added there would miss 500s.
    """

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())
