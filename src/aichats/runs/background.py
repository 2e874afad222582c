"""What ``aichats serve`` and ``aichats worker`` run beside (or instead of) the API.

The agent workers, the scheduler, the webhook sender and the hourly housekeeping, each
a service of the process's one supervisor (:mod:`aichats.runs.supervisor`).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from aichats.config import Settings
from aichats.runs.delivery import webhook_sender
from aichats.runs.housekeeping import housekeeping_forever
from aichats.runs.share import Share, turn_slots
from aichats.runs.supervisor import Service, Supervisor
from aichats.runs.worker import Workers
from aichats.scheduling.loop import schedule_forever
from aichats.storage.database import Database
from aichats.tools.operator import OperatorServers


@asynccontextmanager
async def background(
    db: Database,
    settings: Settings,
    *,
    workers: int,
    housekeeping: bool,
    api: bool = False,
    operator: OperatorServers | None = None,
) -> AsyncIterator[Supervisor]:
    """The process's services, running while in the block (which gets their supervisor);
    stopped, and waited for, after it.

    The agent worker, for ``workers`` turns at once, and, when there is one, the scheduler
    and the webhook sender (a process without workers, an API-only ``serve``, leaves them
    to the worker processes); ``housekeeping`` (``serve``) forgets expired idempotency
    answers hourly. The agents' models are loaded before the block starts, and what the
    process made until then is frozen out of the garbage collector's reach. In a process
    that also serves the ``api``, the turns use at most half of ``db``'s connections at
    once, the other half being the API's (:mod:`aichats.runs.share`). ``operator``: the
    operator's tool servers as the API lists them, so that the process lists (and, for a
    stdio server, starts) each once (else the workers keep their own).
    """
    turns_db = Share(db, turn_slots(settings.postgres_pool_size)) if api else None
    pool = Workers(db, settings, workers, turns_db=turns_db, operator=operator)
    await pool.prepare()
    services = pool.services()
    if workers:
        services.append(Service("scheduler", partial(schedule_forever, db, settings, pool.passes)))
        services.append(await webhook_sender(db, settings))
    if housekeeping:
        services.append(Service("housekeeping", partial(housekeeping_forever, db, settings)))
    supervisor = Supervisor(services)
    supervisor.start()
    # What startup made (modules, models, the migrations' Mako) lives as long as the process:
    # out of the collector's reach, a full collection scans only what came after. Measured:
    # it removed 60 ms p99 stalls of the API on PostgreSQL; and an `aichats worker` without it
    # stopped for a 200 ms collection of its 160,000 startup objects in the middle of firing
    # 10,000 schedules (bench/schedules.py, serve + 2 workers).
    gc.freeze()
    try:
        yield supervisor
    finally:
        try:
            await supervisor.stop()
        finally:  # the models too when the stop is cut short (the caller cancelled) or raises
            await pool.close()
