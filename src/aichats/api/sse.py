"""Server-sent event streams that follow the database: read what changed, send it, wait.

Both streams (a chat's events, a user's badges) wait on an in-process
:class:`~aichats.services.events.EventHub`, woken by a notification from any process
(PostgreSQL) or from this one (SQLite). Without cross-process notifications (SQLite, or a
lost LISTEN connection) they also look again every ``POLL_SECONDS``, so that changes
written by another process still arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse, ServerSentEvent

from aichats.services.events import EventHub, K
from aichats.storage.database import Database

KEEPALIVE_SECONDS = 15
POLL_SECONDS = 1.0


def follow(
    db: Database, hub: EventHub[K], key: K, read: Callable[[], AsyncIterator[ServerSentEvent]]
) -> EventSourceResponse:
    """A stream that sends what ``read`` yields now, then again each time ``key`` is woken."""

    async def generate() -> AsyncIterator[ServerSentEvent]:
        woken = hub.subscribe(key)
        try:
            while True:
                woken.clear()  # before reading: a change made while it reads wakes it again
                async for event in read():
                    yield event
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), KEEPALIVE_SECONDS if db.listening else POLL_SECONDS)
        finally:
            hub.unsubscribe(key, woken)

    return EventSourceResponse(generate(), ping=KEEPALIVE_SECONDS, headers={"Cache-Control": "no-store"})
