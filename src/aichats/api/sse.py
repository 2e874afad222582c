"""Server-sent event streams that follow the database: read what changed, send it, wait.

Both streams (a chat's events, a user's badges) wait on an in-process
:class:`~aichats.services.events.EventHub`, woken by a notification from any process
(PostgreSQL LISTEN; on SQLite, from this process, or a watcher's "something changed" when
another process committed). Without cross-process notifications (a lost LISTEN
connection) they also look again every ``POLL_SECONDS``, so that changes written by
another process still arrive.

A stream lives as long as the key that opened it: it also waits on the keys hub
(``aichats_keys``, which :func:`~aichats.services.keys.revoke_key` notifies from any
process) and, when its key may have changed, asks the database again and ends if the key
was revoked, so that a revoked key stops receiving data within a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from aichats.services import keys
from aichats.services.events import POLL_SECONDS, EventHub, K
from aichats.services.keys import Principal

KEEPALIVE_SECONDS = 15


def follow(
    request: Request,
    principal: Principal,
    hub: EventHub[K],
    key: K,
    read: Callable[[], AsyncIterator[ServerSentEvent]],
) -> EventSourceResponse:
    """A stream that sends what ``read`` yields now, then again each time ``key`` is woken,
    until the client leaves or ``principal``'s key is revoked."""
    db = request.app.state.db
    key_hub: EventHub[str] = request.app.state.key_hub

    async def generate() -> AsyncIterator[ServerSentEvent]:
        woken = hub.subscribe(key)
        key_hub.subscribe(principal.key_id, woken)  # a change of the key wakes the stream...
        key_changed = key_hub.subscribe(principal.key_id)  # ...and says that it was the key
        key_changed.set()  # checked once more now: it may have been revoked since the request was let in
        try:
            while True:
                woken.clear()  # before reading: a change made while it reads wakes it again
                if key_changed.is_set() or not db.listening:
                    key_changed.clear()
                    if not await keys.is_live(db, principal.key_id):
                        return  # revoked: end the stream (a reconnect gets 401)
                async for event in read():
                    yield event
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), KEEPALIVE_SECONDS if db.listening else POLL_SECONDS)
        finally:
            hub.unsubscribe(key, woken)
            key_hub.unsubscribe(principal.key_id, woken)
            key_hub.unsubscribe(principal.key_id, key_changed)

    return EventSourceResponse(generate(), ping=KEEPALIVE_SECONDS, headers={"Cache-Control": "no-store"})
