"""The scheduler as a service: a scheduling pass every ``AICHATS_SCHEDULER_INTERVAL_SECONDS``,
on the clock's multiples of it (every whole second, by default)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aichats.config import Settings
from aichats.scheduling import scheduler
from aichats.storage import database
from aichats.storage.database import Database

log = logging.getLogger("aichats.scheduler")
# How long after a multiple of the interval a pass starts: enough for the instant to be
# past by the time the pass reads the clock.
PAST_THE_INSTANT_SECONDS = 0.005
# The longest a scheduling pass keeps its process's workers from claiming runs (Passes):
# 10,000 schedules due at once fire in about a second.
HOLD_SECONDS = 2.0


def until_next_pass(interval: float, now: float) -> float:
    """Seconds from ``now`` (epoch seconds) to the next pass: just after the next multiple
    of ``interval`` since the epoch. Cron instants fall on whole minutes, so passes on the
    second pick them up at once (a pass every second from whenever the process started
    came up to a second late)."""
    return interval - now % interval + PAST_THE_INSTANT_SECONDS


class Passes:
    """Whether this process's scheduling pass is firing, for the process's workers: they
    claim no runs from when the pass finds schedules due until it ends, for at most
    ``hold_seconds``. A pass that finds nothing due holds nothing.

    Why: the fires of a burst of due schedules (10,000 at 09:00) can be claimed as soon as
    their batch commits, and answering them at once made the turns and the pass share the
    process and, with several processes, the machine's cores. 10,000 due at once were all
    fired 1.3 s after their instant by one ``serve`` with the turns running, 1.0 s when
    the turns waited, as fast as the scheduler alone (medians of three rounds,
    bench/README.md). The hold is the pass's length: about a second for 10,000. It holds
    back the runs queued before the pass too; the fires would queue behind them anyway, and
    those are what a burst adds. Only the process's own pass holds its workers: another
    process's workers go on once their own pass is over.
    """

    def __init__(self, hold_seconds: float = HOLD_SECONDS) -> None:
        self.hold_seconds = hold_seconds
        self._over = asyncio.Event()
        self._over.set()
        self._started = 0.0

    @property
    def idle(self) -> bool:
        """The workers are not held: no pass is firing."""
        return self._over.is_set()

    def firing(self) -> None:
        """The running pass found schedules due: hold the workers from now (once a pass)."""
        if self._over.is_set():
            self._started = time.monotonic()
            self._over.clear()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """A pass runs in the block (which may raise): the hold ends with it."""
        try:
            yield
        finally:
            self._over.set()

    async def over(self) -> None:
        """Return once no pass is firing, or ``hold_seconds`` after the firing one began."""
        if self._over.is_set():
            return  # the worker's every turn of its loop: nothing more to do
        left = self._started + self.hold_seconds - time.monotonic()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left):
                await self._over.wait()


async def one_pass(db: Database, settings: Settings, passes: Passes) -> scheduler.Tick:
    """A scheduling pass, with the settings' limits; ``passes`` knows when it fires."""
    async with passes.running():
        return await scheduler.tick(
            db,
            max_in_flight=settings.schedule_max_in_flight,
            batch_size=settings.scheduler_batch_size,
            budget=settings.token_budget_per_day,
            on_due=passes.firing,
        )


async def schedule_forever(db: Database, settings: Settings, passes: Passes) -> None:
    """Pass after pass; a pass that fails is logged, and the next one comes as usual.
    ``passes``: the process's workers' view of them (:class:`Passes`).

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
                await one_pass(own or db, settings, passes)
            except Exception:
                log.exception("scheduling pass failed")
    finally:
        if own is not None:
            await own.close()
