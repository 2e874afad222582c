"""What ``/metrics`` reads from the database when it is scraped: the run queue, the
schedules that are due, the webhook outbox. Database-wide figures, so every process
that is scraped gives the same ones (aggregate them with ``max``, not ``sum``).

One cheap query each, per scrape and never per request, each served by a partial index
that holds only the rows it counts (active runs, active schedules, pending deliveries):
their cost follows the backlog, not the tables' history. These are read-only
aggregates for the operator; the tables' owners (``services/``) keep every statement
that reads rows for the service or changes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import sqlalchemy as sa
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from aichats.clock import now_ms
from aichats.storage.database import Database
from aichats.storage.schema import runs, schedules, webhook_deliveries

log = logging.getLogger("aichats.metrics")

READ_SECONDS = 5.0  # a scrape never waits longer than this for the database
ACTIVE = ("queued", "running", "waiting")

# Literals, not parameters: the predicates the partial indexes were made with.
_ACTIVE_RUNS = (
    sa.select(runs.c.status, sa.func.count().label("n"), sa.func.min(runs.c.created_at).label("oldest"))
    .where(runs.c.status.in_([sa.literal_column(f"'{status}'", sa.String()) for status in ACTIVE]))
    .group_by(runs.c.status)
)
_DUE_SCHEDULES = sa.select(sa.func.count().label("n")).where(
    sa.text("active"),
    schedules.c.next_run_at <= sa.bindparam("now"),  # as ix_schedules_due's predicate
)
_PENDING = webhook_deliveries.c.status == sa.literal_column("'pending'", sa.String())
_DELIVERIES = sa.select(
    sa.func.count().label("pending"),
    sa.func.coalesce(
        sa.func.sum(sa.case((webhook_deliveries.c.next_attempt_at <= sa.bindparam("now"), 1), else_=0)), 0
    ).label("due"),
).where(_PENDING)


async def read(db: Database) -> list[Metric]:
    """The gauges, read now; ``aichats_database_up`` 0 and no other gauge when the
    database fails to answer (the in-process metrics are still worth a scrape)."""
    up = GaugeMetricFamily("aichats_database_up", "1 when this scrape could read the database, else 0.")
    try:
        async with asyncio.timeout(READ_SECONDS):
            gauges = await _read(db, now_ms())
    except Exception as error:
        log.warning("metrics: the database did not answer: %s: %s", type(error).__name__, error)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    return [up, *gauges]


async def _read(db: Database, now: int) -> Iterable[Metric]:
    active = {row["status"]: row for row in await db.fetch_all(_ACTIVE_RUNS)}
    runs_gauge = GaugeMetricFamily(
        "aichats_runs_active",
        "Runs not finished, by status: queued (the run queue's depth), running, waiting (for a tool's approval).",
        labels=("status",),
    )
    for status in ACTIVE:
        row = active.get(status)
        runs_gauge.add_metric([status], row["n"] if row else 0)
    queued = active.get("queued")
    oldest = GaugeMetricFamily(
        "aichats_run_queue_oldest_seconds", "Age of the oldest queued run (0 when none is queued)."
    )
    oldest.add_metric([], max(now - queued["oldest"], 0) / 1000 if queued else 0)

    due = await db.fetch_one(_DUE_SCHEDULES, {"now": now})
    schedules_gauge = GaugeMetricFamily(
        "aichats_schedules_due", "Active schedules whose next instant has come and that have not fired yet."
    )
    schedules_gauge.add_metric([], due["n"] if due else 0)

    outbox = await db.fetch_one(_DELIVERIES, {"now": now})
    pending = GaugeMetricFamily(
        "aichats_webhook_deliveries_pending", "Webhook deliveries not yet delivered nor given up (retries included)."
    )
    pending.add_metric([], outbox["pending"] if outbox else 0)
    backlog = GaugeMetricFamily(
        "aichats_webhook_deliveries_due", "Pending webhook deliveries whose time has come: the sender's backlog."
    )
    backlog.add_metric([], int(outbox["due"]) if outbox else 0)
    return [runs_gauge, oldest, schedules_gauge, pending, backlog]
