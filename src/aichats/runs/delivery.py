"""The webhook sender: a service that sends due deliveries from the outbox, one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from aichats.config import Settings
from aichats.runs.supervisor import Service
from aichats.services import webhooks
from aichats.storage.database import Database

log = logging.getLogger("aichats.webhooks")

POLL_SECONDS = 1.0  # without a notification, look for due deliveries (retries) this often


async def webhook_sender(db: Database, settings: Settings) -> Service:
    """The webhook sender as a service for the supervisor, listening for new deliveries.

    The listener is registered here, once, and not in the service's loop: the supervisor
    restarts a service that crashed, and ``Database`` has no unlisten, so each restart
    would add another listener.
    """
    wake = asyncio.Event()
    await db.listen(webhooks.CHANNEL, lambda _payload: wake.set())
    return Service("webhooks", partial(deliver_forever, db, settings, wake))


async def deliver_forever(db: Database, settings: Settings, wake: asyncio.Event) -> None:
    """Send due webhook deliveries; wake on ``wake`` (set on ``aichats_webhooks``) or every
    second. A failed attempt is the delivery's (recorded by :func:`webhooks.deliver_one`);
    anything else that fails is logged and the loop goes on."""
    async with webhooks.sender(allow_private=settings.webhooks_allow_private_urls) as http:
        while True:
            wake.clear()
            try:
                sent = await webhooks.deliver_one(db, http, retry_seconds=settings.webhook_retry_seconds)
            except Exception:
                log.exception("webhook delivery failed")
                sent = False
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_SECONDS)
