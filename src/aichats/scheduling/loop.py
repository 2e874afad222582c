"""The scheduler as a service: a scheduling pass about every ``AICHATS_SCHEDULER_INTERVAL_SECONDS``."""

from __future__ import annotations

import asyncio
import logging

from aichats.config import Settings
from aichats.scheduling import scheduler
from aichats.storage.database import Database

log = logging.getLogger("aichats.scheduler")


async def schedule_forever(db: Database, settings: Settings) -> None:
    """Pass after pass; a pass that fails is logged, and the next one comes as usual."""
    while True:
        try:
            await scheduler.tick(db, max_in_flight=settings.schedule_max_in_flight)
        except Exception:
            log.exception("scheduling pass failed")
        await asyncio.sleep(settings.scheduler_interval_seconds)
