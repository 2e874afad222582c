"""Scheduled automation: one schedule per chat, a prompt fired on cron, interval or once.

Times are computed in the schedule's own IANA time zone with ``cronsim`` (cron's own
daylight-saving rules: a 02:30 that does not exist runs once at 03:00, one that exists
twice runs once), so 09:00 stays 09:00 local all year.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, TypedDict, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import orjson
import sqlalchemy as sa
from cronsim import CronSim, CronSimError
from sqlalchemy.dialects import postgresql

from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms, parse_iso
from aichats.errors import Invalid, NotFound, ScheduleLimitExceeded
from aichats.services import chats
from aichats.services.sql import json_records
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import ACTIVE_CRON, ai_chats, schedules, users

MAX_PROMPT_LENGTH = 32_000
MAX_INTERVAL_SECONDS = 366 * 24 * 3600  # a (leap) year; longer waits are a `run_at`
MAX_INSTANT = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last instant ISO 8601 (and the API) can write
_EPOCH = datetime(2000, 1, 1)  # cronsim explains an expression from any start; this one is fixed
NEXT_TIMES = 5

_s = schedules.c


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule as saved (or previewed): a prompt (none for a preview), an IANA time zone,
    and one of a 5-field cron, an interval in seconds or a single ISO 8601 instant.

    :func:`timing` checks what the values mean (422): the zone exists, the cron parses, the
    interval is at least the operator's minimum, the instant is in the future."""

    timezone: str
    prompt: str | None = None
    cron: str | None = None
    interval_seconds: int | None = None
    run_at: str | None = None
    active: bool = True
    tools: tuple[str, ...] | None = None  # the tools its turns may use (None: the chat's)
    allow_changes: bool = False  # whether its turns may call tools that change things


def zone(name: str) -> ZoneInfo:
    if name not in _zones():
        raise Invalid(f"timezone {name!r} is not an IANA time zone (e.g. America/New_York)")
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        raise Invalid(f"timezone {name!r} is not an IANA time zone (e.g. America/New_York)") from None


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5:
        raise Invalid(f"cron {expression!r} must have 5 fields (minute hour day month weekday)")
    try:
        CronSim(expression, datetime.now(UTC))
    except CronSimError as error:
        raise Invalid(f"cron {expression!r} is not valid: {error}") from None
    return " ".join(fields)


def fires_after(row: Any, after_ms: int, count: int = 1) -> list[int]:
    """The next ``count`` instants (ms) strictly after ``after_ms``, none past ``MAX_INSTANT``
    nor in local year 10000 (so fewer, or none, near the end of year 9999: a schedule has no
    run it could not write or compute)."""
    tz = ZoneInfo(row["timezone"])
    if row["run_at"] is not None:
        return [row["run_at"]] if after_ms < row["run_at"] <= MAX_INSTANT else []
    if row["interval_seconds"] is not None:
        step = row["interval_seconds"] * 1000
        anchor = row["created_at"]
        first = anchor + ((max(after_ms - anchor, 0) // step) + 1) * step
        return [t for t in range(first, first + count * step, step) if t <= MAX_INSTANT]
    try:
        start = datetime.fromtimestamp(after_ms / 1000, tz)
    except (OverflowError, ValueError):  # local time already in year 10000 (or later)
        return []
    iterator = CronSim(row["cron"], start)
    out: list[int] = []
    while len(out) < count:
        try:
            instant = int(next(iterator).timestamp() * 1000)
        except OverflowError:  # cronsim walked past year 9999
            break
        if instant > MAX_INSTANT:
            break
        if instant > after_ms:
            out.append(instant)
    return out


def latest_at_or_before(row: Any, due: int, now: int) -> int:
    """The latest instant from ``due`` (the schedule's due instant) to ``now``: the one a
    catch-up fires. Found directly (arithmetic for intervals, cronsim's ``reverse=True``
    for cron), so a long downtime costs what a short one does."""
    if row["run_at"] is not None:
        return due
    if row["interval_seconds"] is not None:
        step = row["interval_seconds"] * 1000
        aligned = row["created_at"] + (max(now - row["created_at"], 0) // step) * step
        return max(aligned, due)
    # Two instants back with reverse, then forward with ``fires_after``: the forward walk
    # defines a schedule's instants (and their daylight-saving choices); reverse only finds
    # where to start it, one instant early to be safe.
    start = _two_back(row, due, now)
    fire = due
    if start > due and (first := fires_after(row, start - 1)) and first[0] <= now:
        fire = first[0]
    for _ in range(8):  # a step or two from ``start``; bounded whatever the expression
        following = fires_after(row, fire)
        if not following or following[0] > now:
            break
        fire = following[0]
    return fire


def _two_back(row: Any, due: int, now: int) -> int:
    """The second cron instant at or before ``now`` by cronsim's ``reverse=True`` (``due``
    if that is later, or if local time is already past year 9999)."""
    try:
        end = datetime.fromtimestamp((now + 60_000) / 1000, ZoneInfo(row["timezone"]))
    except (OverflowError, ValueError):
        return due
    backwards, seen = CronSim(row["cron"], end, reverse=True), 0
    for _ in range(4):  # at most one reverse instant lies in the minute after ``now``
        try:
            instant = int(next(backwards).timestamp() * 1000)
        except OverflowError:
            return due
        if instant > now:
            continue
        seen += 1
        if instant <= due or seen == 2:
            return max(instant, due)
    return due


def describe(row: Any) -> str:
    if row["cron"] is not None:  # cronsim's own words ("At 09:00 on Monday"); the start instant is irrelevant
        return f"{CronSim(row['cron'], _EPOCH).explain()} ({row['timezone']})"
    if row["interval_seconds"] is not None:
        return f"Every {timedelta(seconds=row['interval_seconds'])} (h:mm:ss)"
    return f"Once, at {isoformat_ms(row['run_at'])}"


def render(prompt: str, timezone: str, at_ms: int) -> str:
    if "{{" not in prompt:
        return prompt
    for name, value in _local_values(timezone, at_ms):
        prompt = prompt.replace("{{" + name + "}}", value).replace("{{ " + name + " }}", value)
    return prompt


@lru_cache(maxsize=1024)
def _local_values(timezone: str, at_ms: int) -> tuple[tuple[str, str], ...]:
    """The date, time and weekday of an instant in a zone: computed once for a burst of
    schedules due at the same instant in the same zone."""
    local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(timezone))
    return ("date", local.strftime("%Y-%m-%d")), ("time", local.strftime("%H:%M")), ("weekday", local.strftime("%A"))


def schedule_json(row: Row, chat_id: str) -> dict[str, Any]:
    # Stored rows may predate today's checks (a cron or zone refused now, an interval of
    # 10**15): they are still shown, with what cannot be computed left out, never a 500.
    try:
        description = describe(row)
        upcoming = fires_after(row, max(now_ms(), (row["last_run_at"] or 0)), NEXT_TIMES) if row["active"] else []
    except Exception as error:
        description, upcoming = f"Cannot be computed ({type(error).__name__}: {error})", []
    next_run_at = row["next_run_at"] if row["active"] and (row["next_run_at"] or 0) <= MAX_INSTANT else None
    return {
        "ai_chat_id": chat_id,
        "prompt": row["prompt"],
        "timezone": row["timezone"],
        "cron": row["cron"],
        "interval_seconds": row["interval_seconds"],
        "run_at": isoformat_ms_or_none(row["run_at"]),
        "active": bool(row["active"]),
        "description": description,
        "next_run_at": isoformat_ms_or_none(next_run_at),
        "next_run_times": [isoformat_ms(t) for t in upcoming],
        "last_run_at": isoformat_ms_or_none(row["last_run_at"]),
        "consecutive_failures": row["consecutive_failures"],
        "last_error": row["last_error"],
        "tools": chats.tools_of(row["tools"]),
        "allow_changes": bool(row["allow_changes"]),
        "created_at": isoformat_ms(row["created_at"]),
        "updated_at": isoformat_ms(row["updated_at"]),
    }


_COLUMNS = (
    _s.pk,
    _s.chat_pk,
    _s.prompt,
    _s.timezone,
    _s.cron,
    _s.interval_seconds,
    _s.run_at,
    _s.active,
    _s.next_run_at,
    _s.last_run_at,
    _s.consecutive_failures,
    _s.created_at,
    _s.updated_at,
    _s.last_error,
    _s.tools,
    _s.allow_changes,
)


class ScheduleRow(TypedDict):
    """A schedule as :data:`_COLUMNS` read it (typed, not copied: see ``chats.ChatRow``)."""

    pk: int
    chat_pk: int
    prompt: str
    timezone: str
    cron: str | None
    interval_seconds: int | None
    run_at: int | None
    active: bool  # SQLite gives 0 or 1
    next_run_at: int | None
    last_run_at: int | None
    consecutive_failures: int
    created_at: int
    updated_at: int
    last_error: str | None
    tools: str | None  # JSON list of tool names, or NULL: the chat's
    allow_changes: bool


_GET = sa.select(*_COLUMNS).where(_s.chat_pk == sa.bindparam("chat_pk"))
_DELETE = sa.delete(schedules).where(_s.chat_pk == sa.bindparam("chat_pk"))
# ``created_at`` too: it is when this definition was saved, the anchor intervals count from
# (keeping the first save's made the runs after the next one drift back to the old phase).
_REPLACED = (
    "prompt", "timezone", "cron", "interval_seconds", "run_at", "active", "next_run_at", "updated_at", "created_at",
    "tools", "allow_changes",
)  # fmt: skip
_INSERT = postgresql.insert(schedules).values({c: sa.bindparam(c) for c in ("chat_pk", *_REPLACED)})
# One statement, so simultaneous PUTs cannot both insert (a select-then-insert did, and
# one answered 500): ``INSERT … ON CONFLICT DO UPDATE``, which SQLite speaks too. Saving
# again clears the failures and the error.
_UPSERT = _INSERT.on_conflict_do_update(
    index_elements=[_s.chat_pk],
    set_={**{c: _INSERT.excluded[c] for c in _REPLACED}, "consecutive_failures": 0, "last_error": None},
).returning(*_COLUMNS)


async def set_flag(tx: Connection, chat_pk: int, active: bool) -> None:
    """Keep the chat's ``has_active_cron`` (the list filter) in step with the schedule."""
    await chats.set_active_cron(tx, chat_pk, active)


def timing(data: ScheduleSpec, *, now: int, min_interval_seconds: int) -> dict[str, Any]:
    """When ``data`` fires, checked (422 for a bad cron, an unknown zone, an interval below the
    operator's minimum, a past ``run_at``, no run before year 10000): the columns
    ``fires_after`` and ``describe`` read."""
    tz = zone(data.timezone)
    cron = check_cron(data.cron) if data.cron is not None else None
    run_at = None
    if data.interval_seconds is not None and data.interval_seconds < min_interval_seconds:
        raise Invalid(f"interval_seconds must be at least {min_interval_seconds} (the operator's minimum)")
    if data.run_at is not None:
        try:
            run_at = parse_iso(data.run_at)
        except ValueError:
            raise Invalid(f"run_at {data.run_at!r} is not an ISO 8601 instant") from None
        if run_at <= now:
            raise Invalid("run_at is in the past")
        if run_at > MAX_INSTANT:
            raise Invalid("run_at must be at most 9999-12-31T23:59:59.999Z")
    row = {
        "timezone": tz.key,
        "cron": cron,
        "interval_seconds": data.interval_seconds,
        "run_at": run_at,
        "created_at": now,  # intervals count from when the schedule is saved
    }
    if not fires_after(row, now):  # only near the end of year 9999: no instant the API could write
        raise Invalid("this schedule has no run left before year 10000")
    return row


def preview(data: ScheduleSpec, *, min_interval_seconds: int) -> dict[str, Any]:
    """What a schedule saved now would say: its description and next five fire times (none
    if inactive), from the same code as ``schedule_json``. Nothing is stored."""
    now = now_ms()
    row = timing(data, now=now, min_interval_seconds=min_interval_seconds)
    upcoming = fires_after(row, now, NEXT_TIMES) if data.active else []
    return {
        "description": describe(row),
        "next_run_times": [isoformat_ms(t) for t in upcoming],
        "timezone": row["timezone"],
    }


# The cap on a user's active schedules (AICHATS_MAX_SCHEDULES_PER_USER). A schedule that
# becomes active first locks its owner's row, so that two of the user's schedules cannot
# both see room for one: ``FOR NO KEY UPDATE``, which queues such transactions one behind
# the other but leaves the row's foreign keys (a reply's notification, its usage) unblocked.
# SQLite writes one transaction at a time anyway. The count reads ``has_active_cron``, kept
# in step with each schedule, on its index: at most the cap's entries.
_LOCK_OWNER = (
    sa.select(users.c.id)
    .join_from(users, ai_chats, ai_chats.c.user_id == users.c.id)
    .where(ai_chats.c.pk == sa.bindparam("chat_pk"))
    .with_for_update(of=users, key_share=True)
)
_OTHER_ACTIVE = sa.select(sa.func.count().label("n")).where(
    ai_chats.c.user_id == sa.bindparam("user_id"),
    ACTIVE_CRON,  # as its partial index says it (schema.py)
    ai_chats.c.deleted_at.is_(None),
    ai_chats.c.pk != sa.bindparam("chat_pk"),
)


async def active_count(db: Database, user_id: str) -> int:
    """The user's active schedules, as the cap counts them (``GET /usage``)."""
    row = await db.fetch_one(_OTHER_ACTIVE, {"user_id": user_id, "chat_pk": 0})  # no chat's pk is 0
    return int(row["n"]) if row is not None else 0


async def _check_cap(tx: Connection, chat_pk: int, max_per_user: int) -> None:
    """Refuse (409) to make the chat's schedule active if its owner's other active schedules
    already reach ``max_per_user`` (0: no cap). Replacing an active schedule adds none."""
    if not max_per_user:
        return
    owner = await tx.fetch_one(_LOCK_OWNER, {"chat_pk": chat_pk})
    if owner is None:
        return
    others = await tx.fetch_one(_OTHER_ACTIVE, {"user_id": owner["id"], "chat_pk": chat_pk})
    if others is not None and others["n"] >= max_per_user:
        raise ScheduleLimitExceeded(
            f"you already have {others['n']} active schedules, the most this service allows "
            f"({max_per_user}): pause or delete one first"
        )


async def put_schedule(
    db: Database, chat_pk: int, data: ScheduleSpec, *, min_interval_seconds: int, max_per_user: int = 0
) -> ScheduleRow:
    """Save the chat's schedule (one per chat); an active one counts against the owner's
    ``max_per_user`` active schedules (0: no cap), a 409 past it with nothing stored."""
    now = now_ms()
    values = {
        "chat_pk": chat_pk,
        "prompt": data.prompt,
        **timing(data, now=now, min_interval_seconds=min_interval_seconds),
        "active": data.active,
        "updated_at": now,
        "tools": chats.tools_column(data.tools),
        "allow_changes": data.allow_changes,
    }
    upcoming = fires_after(values, now)
    values["next_run_at"] = upcoming[0] if upcoming else None
    async with db.transaction() as tx:
        if data.active:
            await _check_cap(tx, chat_pk, max_per_user)
        row = await tx.fetch_one(_UPSERT, values)
        await set_flag(tx, chat_pk, data.active)
    assert row is not None
    return cast(ScheduleRow, row)


async def get_schedule(db: Database, chat_pk: int) -> ScheduleRow:
    row = await db.fetch_one(_GET, {"chat_pk": chat_pk})
    if row is None:
        raise NotFound("this chat has no schedule")
    return cast(ScheduleRow, row)


_SET_ACTIVE = (
    sa.update(schedules)
    .where(_s.chat_pk == sa.bindparam("chat_pk"))
    .values(active=sa.bindparam("active"), next_run_at=sa.bindparam("next_run_at"), updated_at=sa.bindparam("now"))
    .returning(*_COLUMNS)
)


async def set_active(db: Database, chat_pk: int, active: bool, *, max_per_user: int = 0) -> ScheduleRow:
    """Pause or resume the schedule (resumed, it next fires at its first time from now: what
    it missed while paused does not fire; it counts against ``max_per_user`` as in
    :func:`put_schedule`)."""
    now = now_ms()
    async with db.transaction() as tx:
        current = await tx.fetch_one(_GET, {"chat_pk": chat_pk})
        if current is None:
            raise NotFound("this chat has no schedule")
        if active:
            await _check_cap(tx, chat_pk, max_per_user)
        upcoming = fires_after(current, now) if active else []
        if active and not upcoming:
            raise Invalid("this schedule has no run left to resume (a single run in the past): set a new time")
        params = {"chat_pk": chat_pk, "active": active, "next_run_at": upcoming[0] if upcoming else None, "now": now}
        row = await tx.fetch_one(_SET_ACTIVE, params)
        await set_flag(tx, chat_pk, active)
    assert row is not None
    return cast(ScheduleRow, row)


async def delete_schedule(db: Database, chat_pk: int) -> None:
    async with db.transaction() as tx:
        if not await tx.execute(_DELETE, {"chat_pk": chat_pk}):
            raise NotFound("this chat has no schedule")
        await set_flag(tx, chat_pk, False)


# ------------------------------------------------------------ the scheduler's statements
# What a scheduling pass (:mod:`aichats.scheduling.scheduler`) reads and writes: a batch of
# the most overdue schedules, taken with ``SKIP LOCKED``, and their ``next_run_at`` advanced
# with a compare-and-set on the instant each was due, so each instant fires once.


class DueRow(TypedDict):
    """A due schedule, with what a pass needs of its chat (typed, not copied: see ``chats.ChatRow``)."""

    pk: int
    chat_pk: int
    prompt: str
    timezone: str
    cron: str | None
    interval_seconds: int | None
    run_at: int | None
    next_run_at: int
    created_at: int
    chat_id: str
    user_id: str
    chat_deleted_at: int | None


_c = ai_chats.c
# The schedules and their chats are locked together, skipping any either of which another
# transaction holds: a pass then never waits for a lock, so it cannot deadlock with a reply
# that holds its chat and waits for the schedule (it records the scheduled turn's outcome);
# that schedule fires on the next pass. ``NO KEY UPDATE``: what the pass's own UPDATEs take,
# which leaves the chat's new messages and events (foreign keys: ``KEY SHARE``) unblocked.
_DUE = (
    sa.select(
        _s.pk, _s.chat_pk, _s.prompt, _s.timezone, _s.cron, _s.interval_seconds, _s.run_at, _s.next_run_at,
        _s.created_at, _c.id.label("chat_id"), _c.user_id, _c.deleted_at.label("chat_deleted_at"),
    )
    .join_from(schedules, ai_chats, _c.pk == _s.chat_pk)
    .where(sa.text("active"), _s.next_run_at <= sa.bindparam("now"))
    .order_by(_s.next_run_at)
    .limit(sa.bindparam("limit"))
    .with_for_update(of=(schedules, ai_chats), key_share=True, skip_locked=True)
)  # fmt: skip
_moves = json_records("moves", pk=sa.BigInteger(), due=sa.BigInteger(), next=sa.BigInteger(), fired=sa.BigInteger())
_ADVANCE = (
    sa.update(schedules)
    .where(_s.pk == _moves.c.pk, _s.next_run_at == _moves.c.due, _s.active == sa.true())
    .values(next_run_at=_moves.c.next, last_run_at=_moves.c.fired, active=_moves.c.next.is_not(None))
    .returning(_s.pk)
)
_STILL_DUE = (_s.pk == sa.bindparam("pk"), _s.next_run_at == sa.bindparam("due"), _s.active == sa.true())
_QUARANTINE = (
    sa.update(schedules).where(*_STILL_DUE).values(active=False, next_run_at=None, last_error=sa.bindparam("error"))
)
_NEXT_DUE = sa.select(sa.func.min(_s.next_run_at).label("at")).where(sa.text("active"), _s.next_run_at <= MAX_INSTANT)


@dataclass(frozen=True, slots=True)
class Move:
    """A due schedule moved on: it fired ``fired`` and is next due at ``following`` (None:
    it is done, and inactive)."""

    row: DueRow
    fired: int
    following: int | None


async def take_due(tx: Connection, now: int, limit: int) -> list[DueRow]:
    """Up to ``limit`` active schedules due as of ``now``, most overdue first, locked for
    ``tx`` with their chats (other passes skip them)."""
    return cast(list[DueRow], await tx.fetch_all(_DUE, {"now": now, "limit": limit}))


async def advance(tx: Connection, moves: Sequence[Move]) -> set[int]:
    """Move due schedules on, in one statement; the pks of those moved (one another pass
    already moved is not)."""
    if not moves:
        return set()
    records = [{"pk": m.row["pk"], "due": m.row["next_run_at"], "next": m.following, "fired": m.fired} for m in moves]
    rows = await tx.fetch_all(_ADVANCE, {"moves": orjson.dumps(records).decode()})
    return {row["pk"] for row in rows}


async def quarantine(tx: Connection, row: DueRow, error: str) -> bool:
    """Deactivate a due schedule whose instants cannot be computed, keeping ``error``; False
    if another pass already moved it."""
    return bool(await tx.execute(_QUARANTINE, {"pk": row["pk"], "due": row["next_run_at"], "error": error}))


async def next_due(db: Database) -> int | None:
    """When the earliest active schedule is due next (None when none is active)."""
    row = await db.fetch_one(_NEXT_DUE)
    return None if row is None or row["at"] is None else int(row["at"])


_FAILED = (
    sa.update(schedules)
    .where(_s.chat_pk == sa.bindparam("chat_pk"))
    .values(consecutive_failures=_s.consecutive_failures + 1)
    .returning(_s.consecutive_failures, _s.active)
)
_SUCCEEDED = sa.update(schedules).where(_s.chat_pk == sa.bindparam("chat_pk")).values(consecutive_failures=0)
_DEACTIVATE = sa.update(schedules).where(_s.chat_pk == sa.bindparam("chat_pk")).values(active=False, next_run_at=None)


async def record_outcome(tx: Connection, chat_pk: int, *, succeeded: bool, max_failures: int) -> bool:
    """Count a scheduled turn's outcome; True when this failure deactivated the schedule."""
    if succeeded:
        await tx.execute(_SUCCEEDED, {"chat_pk": chat_pk})
        return False
    row = await tx.fetch_one(_FAILED, {"chat_pk": chat_pk})
    if row is None or not row["active"] or row["consecutive_failures"] < max_failures:
        return False
    await tx.execute(_DEACTIVATE, {"chat_pk": chat_pk})
    await set_flag(tx, chat_pk, False)
    return True
