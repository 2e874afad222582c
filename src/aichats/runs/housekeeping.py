"""Hourly housekeeping: forget idempotency answers past their TTL."""

from __future__ import annotations

import asyncio
import logging

from aichats.config import Settings
from aichats.services import idempotency
from aichats.storage.database import Database

log = logging.getLogger("aichats")

INTERVAL_SECONDS = 3600


async def housekeeping_forever(db: Database, settings: Settings) -> None:
    """A pass every ``INTERVAL_SECONDS``, the first at once (a failure is logged, then retried)."""
    while True:
        try:
            await idempotency.purge_expired(db, settings.idempotency_ttl_seconds * 1000)
        except Exception:
            log.exception("housekeeping failed")
        await asyncio.sleep(INTERVAL_SECONDS)
