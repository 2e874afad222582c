"""The scheduler as a service: a scheduling pass every ``AICHATS_SCHEDULER_INTERVAL_SECONDS``,
on the clock's multiples of it (every whole second, by default)."""

from __future__ import annotations

import asyncio
import logging
import time

from aichats.config import Settings
from aichats.scheduling import scheduler
from aichats.storage import database
from aichats.storage.database import Database

log = logging.getLogger("aichats.scheduler")
# How long after a multiple of the interval a pass starts: enough for the instant to be
# past by the time the pass reads the clock.
PAST_THE_INSTANT_SECONDS = 0.005


def until_next_pass(interval: float, now: float) -> float:
    """Seconds from ``now`` (epoch seconds) to the next pass: just after the next multiple
    of ``interval`` since the epoch. Cron instants fall on whole minutes, so passes on the
    second pick them up at once (a pass every second from whenever the process started
    came up to a second late)."""
    return interval - now % interval + PAST_THE_INSTANT_SECONDS


async def schedule_forever(db: Database, settings: Settings) -> None:
    """Pass after pass; a pass that fails is logged, and the next one comes as usual.

    On PostgreSQL the passes have connections of their own, one per batch they write at
    once: the process's pool serves its callers in order, and hundreds of agent turns
    queued on it (a burst of fires being answered) delayed each batch behind them. SQLite's
    one writer is shared, as everything else's.
    """
    own = None
    if db.dialect == "postgresql":
        own = await database.connect(db.url, pool_size=scheduler.PARALLEL_BATCHES)
    try:
        while True:
            await asyncio.sleep(until_next_pass(settings.scheduler_interval_seconds, time.time()))
            try:
                await scheduler.tick(
                    own or db,
                    max_in_flight=settings.schedule_max_in_flight,
                    batch_size=settings.scheduler_batch_size,
                    budget=settings.token_budget_per_day,
                )
            except Exception:
                log.exception("scheduling pass failed")
    finally:
        if own is not None:
            await own.close()
