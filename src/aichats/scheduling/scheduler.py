"""One scheduling pass: fire every due schedule once, as of an instant, a batch at a time.

Any number of processes may tick at once (every process with agent workers does,
``aichats worker`` and ``aichats serve`` unless ``AICHATS_WORKERS=0``, about every
second). A pass takes a batch of due schedules in one statement, locked with
``FOR ... SKIP LOCKED`` (racing passes take disjoint batches), computes their instants in
Python, then writes for the whole batch with multi-row statements, in one transaction:
the schedules advanced with a compare-and-set on the instant each was due, the prompts,
the pending replies and the queued turns, the chats' counts, the ``message.created``
events, and one notification per channel. A unique index on ``(chat, scheduled_for)``
backs the compare-and-set up. So each scheduled instant fires exactly once, and a batch
costs about ten statements whatever its size (one schedule at a time, ten statements
each, 10,000 schedules due at once took 90 s).

Instants missed while nothing ran fire as one catch-up turn (for the latest of them),
never as a burst. A schedule whose instants cannot be computed (old data: a cron or a
time zone today's checks refuse) is quarantined, not retried: it is deactivated with its
error and its owner notified, and the others keep firing. A schedule whose chat was
deleted is turned off without firing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aichats.clock import now_ms
from aichats.observability import metrics
from aichats.services import budgets, chats, notifications, runs, schedules
from aichats.services.messages import MessageSource, QueuedMessage, add_user_messages
from aichats.storage.database import Connection, Database, UniqueViolation

log = logging.getLogger("aichats.scheduler")
# Schedules per transaction (``AICHATS_SCHEDULER_BATCH_SIZE``'s default, for callers without
# settings). bench/schedules.py measured it: see bench/README.md.
BATCH = 250
# Batches a pass writes at once on PostgreSQL, each on its own connection (``SKIP LOCKED``
# gives them disjoint schedules): one batch keeps one server process busy, two use a
# second core (10,000 due at once, in one process: 1.5x faster; three: no faster than two).
PARALLEL_BATCHES = 3
# Told when a batch finds schedules due, before it writes (``loop.Passes.firing``).
OnDue = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Tick:
    fired: int
    skipped_for_limit: bool


@dataclass(frozen=True, slots=True)
class Fire:
    """A due schedule as a pass fires it: for ``at`` (the latest instant missed), next due at
    ``following`` (None: it is done), with its prompt rendered for ``at``."""

    row: schedules.DueRow
    at: int
    following: int | None
    prompt: str

    @property
    def alive(self) -> bool:
        return self.row["chat_deleted_at"] is None


def latest_missed(row: Any, now: int) -> int:
    """The latest instant at or before ``now`` from the due one on (the catch-up fire)."""
    return schedules.latest_at_or_before(row, row["next_run_at"], now)


def plan(rows: list[schedules.DueRow], now: int) -> tuple[list[Fire], list[tuple[schedules.DueRow, Exception]]]:
    """What each due schedule fires, computed before any write (pure): the fires, and the
    schedules whose instants cannot be computed, with why."""
    fires: list[Fire] = []
    broken: list[tuple[schedules.DueRow, Exception]] = []
    for row in rows:
        try:
            at = latest_missed(row, now)
            upcoming = schedules.fires_after(row, now)
            prompt = schedules.render(row["prompt"], row["timezone"], at)
        except Exception as error:  # whatever stored data makes it raise, only this schedule stops
            broken.append((row, error))
            continue
        alive = row["chat_deleted_at"] is None
        fires.append(Fire(row, at, upcoming[0] if upcoming and alive else None, prompt))
    return fires, broken


async def admitted(tx: Connection, fires: list[Fire], *, budget: int | None) -> list[Fire]:
    """The fires that queue a turn: those of users within their daily token budget (one
    statement for the batch; ``budget``: ``AICHATS_TOKEN_BUDGET_PER_DAY``). A fire left out
    has still moved its schedule on: its instant is spent, with no turn, and the chat's
    owner is told (once until they read it)."""
    if not fires:
        return fires
    now = now_ms()
    over = await budgets.over_budget(tx, [f.row["user_id"] for f in fires], now=now, default=budget)
    if not over:
        return fires
    notice = budgets.skipped_run_notice(now)
    for f in fires:
        if f.row["user_id"] in over and (chat := await chats.chat_of_turn(tx, f.row["chat_pk"])) is not None:
            await notifications.schedule_skipped(tx, chat, body=notice)
    log.info(
        "%d scheduled runs skipped: their users' token budgets are used up",
        sum(f.row["user_id"] in over for f in fires),
    )
    return [f for f in fires if f.row["user_id"] not in over]


async def _quarantine(tx: Connection, row: schedules.DueRow, error: Exception) -> None:
    """Deactivate a schedule whose instants cannot be computed, keep why, tell its owner.

    Retrying would fail the same way on every pass, and raising would roll back (and so
    stop) every other schedule of the batch.
    """
    message = f"{type(error).__name__}: {error}"[:500]
    log.warning("the schedule of chat %s cannot be computed, deactivated: %s", row["chat_pk"], message)
    if not await schedules.quarantine(tx, row, message):
        return  # another scheduler took it
    await schedules.set_flag(tx, row["chat_pk"], False)
    chat = await chats.chat_of_turn(tx, row["chat_pk"])
    if chat is not None and chat["deleted_at"] is None:
        body = f"The schedule could not be computed and was turned off ({message}). Save it again to fix it."
        await notifications.schedule_deactivated(tx, chat, body=body, details={"error": message})


async def fire(tx: Connection, fires: list[Fire], *, budget: int | None = None) -> int:
    """Write a planned batch in ``tx``: the schedules moved on, then a turn for each fire of
    a live chat whose instant has none yet (one that has is only moved past); how many
    fired. The messages are stamped with the time they are written."""
    already = await runs.already_fired(tx, [(f.row["chat_pk"], f.at) for f in fires if f.alive])
    moved = await schedules.advance(tx, [schedules.Move(f.row, f.at, f.following) for f in fires])
    fires = [f for f in fires if f.row["pk"] in moved]  # the others, another pass moved
    await chats.clear_active_crons(tx, [f.row["chat_pk"] for f in fires if f.following is None])
    due = [f for f in fires if f.alive and (f.row["chat_pk"], f.at) not in already]
    if len(due) < sum(f.alive for f in fires):
        log.info("%d scheduled instants already had a turn; moved past them", sum(f.alive for f in fires) - len(due))
    due = await admitted(tx, due, budget=budget)
    batch = [
        QueuedMessage(f.row["chat_pk"], f.row["chat_id"], f.prompt, MessageSource.schedule, "schedule", f.at)
        for f in due
    ]
    await add_user_messages(tx, batch, now=now_ms())
    metrics.schedules_fired([f.at for f in due])  # aichats_scheduler_lag_seconds
    return len(batch)


async def _fire_batch(db: Database, now: int, limit: int, budget: int | None, on_due: OnDue) -> tuple[int, int]:
    """Take up to ``limit`` due schedules and fire them, in one transaction; (fired, taken)."""
    async with db.transaction() as tx:
        rows = await schedules.take_due(tx, now, limit)
        if rows:
            on_due()
        fires, broken = plan(rows, now)
        for row, error in broken:
            await _quarantine(tx, row, error)
        fired = await fire(tx, fires, budget=budget) if fires else 0
    return fired, len(rows)


@dataclass
class _Room:
    """What a pass's concurrent batches share: room left under the in-flight limit (each
    batch reserves its size first, and gives back what it did not fire), whom to tell when
    they find schedules due, and the outcome."""

    left: int
    on_due: OnDue  # told when a batch finds schedules due, before it writes
    fired: int = 0
    limited: bool = False  # a batch found no room
    drained: bool = False  # a batch found fewer due than it asked for: nothing more is due


async def _fire_until_done(db: Database, now: int, batch_size: int, budget: int | None, room: _Room) -> None:
    while not room.drained:
        limit = min(batch_size, room.left)
        if limit <= 0:
            room.limited = True
            return
        room.left -= limit
        try:
            fired, taken = await _fire_batch(db, now, limit, budget, room.on_due)
        except UniqueViolation:  # a turn for an instant committed after this batch looked: look again
            log.info("a scheduled instant was fired meanwhile; taking the batch again")
            fired, taken = await _fire_batch(db, now, limit, budget, room.on_due)
        finally:
            room.left += limit
        room.left -= fired
        room.fired += fired
        if taken < limit:
            room.drained = True


async def tick(
    db: Database, *, max_in_flight: int, now: int | None = None, batch_size: int = BATCH,
    parallel: int = PARALLEL_BATCHES, budget: int | None = None, on_due: OnDue = lambda: None,
) -> Tick:  # fmt: skip
    """Fire everything due as of ``now`` (default: the clock), up to the in-flight limit,
    ``batch_size`` schedules per transaction, ``parallel`` transactions at once on PostgreSQL
    (SQLite has one writer). ``budget``: the daily token budget of users without their own
    (``AICHATS_TOKEN_BUDGET_PER_DAY``); the scheduled runs of users over theirs are skipped.
    ``on_due`` is called whenever a batch finds schedules due, before it writes (the loop
    holds the process's workers from then: ``loop.Passes``). The in-flight count is read
    once per pass and kept up to date locally."""
    now = now_ms() if now is None else now
    room = _Room(max_in_flight - await runs.scheduled_in_flight(db), on_due)
    parallel = parallel if db.dialect == "postgresql" else 1
    # A TaskGroup: when one batch fails, the others are cancelled before the error goes on
    # (the next pass must not start while they still write).
    async with asyncio.TaskGroup() as group:
        for _ in range(parallel):
            group.create_task(_fire_until_done(db, now, batch_size, budget, room))
    return Tick(room.fired, skipped_for_limit=room.limited and not room.drained)
