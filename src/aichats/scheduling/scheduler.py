"""One scheduling pass: fire every due schedule once, as of an instant.

Any number of processes may tick at once (every process with agent workers does,
``aichats worker`` and ``aichats serve`` unless ``AICHATS_WORKERS=0``, about every
second). Each due schedule is taken with ``FOR UPDATE SKIP LOCKED``, and its
``next_run_at`` advanced with a compare-and-set in the same transaction as the turn it
queues; a unique index on ``(chat, scheduled_for)`` backs that up. So each scheduled
instant fires exactly once. Instants missed while nothing ran fire as one catch-up turn
(for the latest of them), never as a burst. A schedule whose instants cannot be computed
(old data: a cron or a time zone today's checks refuse) is quarantined, not retried: it
is deactivated with its error and its owner notified, and the others keep firing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aichats.clock import now_ms
from aichats.services import chats, notifications, runs, schedules
from aichats.services.messages import MessageSource, NewMessage, add_user_message
from aichats.storage.database import Connection, Database, Row, UniqueViolation

log = logging.getLogger("aichats.scheduler")
BATCH = 100


@dataclass(frozen=True, slots=True)
class Tick:
    fired: int
    skipped_for_limit: bool


def latest_missed(row: Any, now: int) -> int:
    """The latest instant at or before ``now`` from the due one on (the catch-up fire)."""
    return schedules.latest_at_or_before(row, row["next_run_at"], now)


async def _quarantine(tx: Connection, row: schedules.DueRow, chat: Row | None, error: Exception) -> None:
    """Deactivate a schedule whose instants cannot be computed, keep why, tell its owner.

    Retrying would fail the same way on every pass, and raising would roll back (and so
    stop) every other schedule of the batch.
    """
    message = f"{type(error).__name__}: {error}"[:500]
    log.warning("the schedule of chat %s cannot be computed, deactivated: %s", row["chat_pk"], message)
    if not await schedules.quarantine(tx, row, message):
        return  # another scheduler took it
    await schedules.set_flag(tx, row["chat_pk"], False)
    if chat is not None and chat["deleted_at"] is None:
        body = f"The schedule could not be computed and was turned off ({message}). Save it again to fix it."
        await notifications.schedule_deactivated(tx, chat, body=body, details={"error": message})


async def _fire_one(tx: Connection, now: int, *, queue_turn: bool = True) -> bool | None:
    """Fire the most overdue schedule; None when none is due. ``queue_turn=False`` only
    advances it (its instant already has a turn)."""
    row = await schedules.take_due(tx, now)
    if row is None:
        return None
    chat = await chats.chat_of_turn(tx, row["chat_pk"])
    try:  # pure computation, before any write: a failure here leaves the transaction clean
        fire = latest_missed(row, now)
        upcoming = schedules.fires_after(row, now)
        prompt = schedules.render(row["prompt"], row["timezone"], fire)
    except Exception as error:  # whatever stored data makes it raise, only this schedule stops
        await _quarantine(tx, row, chat, error)
        return False
    alive = chat is not None and chat["deleted_at"] is None
    following = upcoming[0] if upcoming and alive else None
    if not await schedules.advance(tx, row, fired=fire, following=following):  # another scheduler fired it
        return False
    if following is None:
        await schedules.set_flag(tx, row["chat_pk"], False)
    if chat is None or not alive or not queue_turn:
        return False
    data = NewMessage(prompt, source=MessageSource.schedule)
    await add_user_message(
        tx, user_id=chat["user_id"], chat_pk=row["chat_pk"], chat_id=chat["id"], data=data, now=now,
        trigger="schedule", scheduled_for=fire,
    )  # fmt: skip
    return True


async def _fire_batch(db: Database, now: int, limit: int) -> tuple[int, bool]:
    """Fire up to ``limit`` due schedules in one transaction; (fired, more may be due)."""
    fired = 0
    async with db.transaction() as tx:
        for _ in range(limit):
            outcome = await _fire_one(tx, now)
            if outcome is None:
                return fired, False
            fired += bool(outcome)
    return fired, True


async def _fire_singly(db: Database, now: int, limit: int) -> tuple[int, bool]:
    """Like ``_fire_batch``, a transaction per schedule: a schedule whose instant already
    has a turn is advanced without firing again, and only that one."""
    fired = 0
    for _ in range(limit):
        try:
            async with db.transaction() as tx:
                outcome = await _fire_one(tx, now)
        except UniqueViolation:
            log.info("a scheduled instant was already fired; advancing past it")
            async with db.transaction() as tx:
                outcome = await _fire_one(tx, now, queue_turn=False)
        if outcome is None:
            return fired, False
        fired += bool(outcome)
    return fired, True


async def tick(db: Database, *, max_in_flight: int, now: int | None = None) -> Tick:
    """Fire everything due as of ``now`` (default: the clock), up to the in-flight limit.

    Schedules fire in batches of up to ``BATCH`` per transaction (a fire is a dozen
    statements; a transaction each made 10,000 due schedules take over a minute). The
    in-flight count is read once per pass and kept up to date locally.
    """
    now = now_ms() if now is None else now
    room = max_in_flight - await runs.scheduled_in_flight(db)
    fired = 0
    while True:
        if room <= 0:
            return Tick(fired, skipped_for_limit=True)
        try:
            batch, more = await _fire_batch(db, now, min(BATCH, room))
        except UniqueViolation:  # an instant had a turn already (the CAS makes this rare)
            batch, more = await _fire_singly(db, now, min(BATCH, room))
        fired += batch
        room -= batch
        if not more:
            return Tick(fired, skipped_for_limit=False)
