"""Runs, the agent's turns: the one owner of the ``runs`` table.

The queue (a turn queued with its user message or a retry; claimed by a worker under a
lease it renews; every later write fenced by the attempt that claimed it) and a chat's
run history: every agent turn, why it ran, when, and what it cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import orjson
import sqlalchemy as sa

from aichats import ids
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.services.events import notify_keys
from aichats.services.pagination import Keyset, Page, PageRequest, read_page
from aichats.services.sql import json_records
from aichats.services.usage import decimal_tokens
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import ai_chats, runs

_r = runs.c
_RUN_COLUMNS = (
    _r.pk, _r.id, _r.trigger, _r.status, _r.scheduled_for, _r.created_at, _r.started_at, _r.finished_at, _r.error,
    _r.model, _r.input_tokens, _r.output_tokens, _r.blended_tokens_micros,
)  # fmt: skip


class RunRow(TypedDict):
    """A run as the history shows it (typed, not copied: see ``chats.ChatRow``)."""

    pk: int
    id: str
    trigger: str
    status: str
    scheduled_for: int | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    error: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    blended_tokens_micros: int


# Newest first, ``first``/``after`` only.
_LIST = Keyset(
    "r", sa.select(*_RUN_COLUMNS).where(_r.chat_pk == sa.bindparam("chat_pk")), (_r.pk,), descending=True,
    forwards_only=True,
)  # fmt: skip


def run_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "trigger": row["trigger"],
        "status": row["status"],
        "scheduled_for": isoformat_ms_or_none(row["scheduled_for"]),
        "created_at": isoformat_ms(row["created_at"]),
        "started_at": isoformat_ms_or_none(row["started_at"]),
        "finished_at": isoformat_ms_or_none(row["finished_at"]),
        "error": row["error"],
        "model": row["model"],
        "usage": {
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "blended_tokens": decimal_tokens(row["blended_tokens_micros"]),
        },
    }


async def list_runs(db: Database, chat_pk: int, page: PageRequest) -> Page[RunRow]:
    """The chat's runs, newest first (``first``/``after``)."""
    return await read_page(db, _LIST, page, {"chat_pk": chat_pk})


_RUN_OF_MESSAGE = sa.select(*_RUN_COLUMNS).where(
    _r.chat_pk == sa.bindparam("chat_pk"), _r.user_message_pk == sa.bindparam("message_pk")
)


async def run_of_message(tx: Connection, chat_pk: int, message_pk: int) -> RunRow | None:
    """The run queued for a user message, read in the transaction that queued it: "the
    latest run" read afterwards may already be another request's."""
    return cast("RunRow | None", await tx.fetch_one(_RUN_OF_MESSAGE, {"chat_pk": chat_pk, "message_pk": message_pk}))


# ------------------------------------------------------------------ the queue
# Every statement on ``runs`` is here: queueing (a user message, a retry), claiming, the
# lease, the fence, and the reads of the history above. A run moves: queued, running, then
# completed, failed or cancelled; a running run may wait for the user to approve a tool
# call (``waiting``: no worker holds it) and is queued again once they decided.

CHANNEL = "aichats_runs"  # NOTIFY'd when a run is queued: wakes the workers
# NOTIFY'd with a run's pk when the user stops it: the worker running it cancels its turn.
CANCEL_CHANNEL = "aichats_cancel"
_QUEUED = sa.literal_column("'queued'", sa.String())
_RUNNING = sa.literal_column("'running'", sa.String())
_WAITING = sa.literal_column("'waiting'", sa.String())


def _active(columns: Any) -> sa.ColumnElement[bool]:
    """Queued, running or waiting, as a literal the partial index ``ix_runs_active_pk`` matches."""
    return columns.status.in_((_QUEUED, _RUNNING, _WAITING))


_INSERT = sa.insert(runs).values(
    {
        c: sa.bindparam(c)
        for c in (
            "id", "chat_pk", "trigger", "status", "user_message_pk", "assistant_message_pk", "scheduled_for",
            "created_at",
        )
    }
)  # fmt: skip


def queue_from(
    chat_pk: sa.ColumnElement[Any], message_pk: sa.ColumnElement[Any], reply_pk: sa.ColumnElement[Any]
) -> sa.Insert:
    """:func:`queue`'s insert, its chat and messages taken from the rows of other statements
    (the CTEs of :func:`aichats.services.messages.create_chat_alone`); its own values are the
    binds ``run_id``, ``trigger``, ``scheduled_for`` and ``created_at``. The caller notifies
    :data:`CHANNEL`."""
    return sa.insert(runs).from_select(
        [
            "id", "chat_pk", "trigger", "status", "user_message_pk", "assistant_message_pk", "scheduled_for",
            "created_at",
        ],
        sa.select(
            sa.bindparam("run_id", type_=sa.String), chat_pk, sa.bindparam("trigger", type_=sa.String), _QUEUED,
            message_pk, reply_pk, sa.bindparam("scheduled_for", type_=sa.BigInteger),
            sa.bindparam("created_at", type_=sa.BigInteger),
        ),
    )  # fmt: skip


_ANSWERED = (
    sa.select(_r.user_message_pk)
    .where(_r.chat_pk == sa.bindparam("chat_pk"), _r.assistant_message_pk == sa.bindparam("message_pk"))
    .order_by(_r.pk.desc())
    .limit(1)
)
# Queued or running (a waiting run holds no worker): ``_active`` first, so that the partial
# index ``ix_runs_active_pk`` serves it (a pass reads it every second; a scan of every run ever
# made would grow with the table).
_SCHEDULED_IN_FLIGHT = sa.select(sa.func.count().label("n")).where(
    _active(_r), _r.trigger == "schedule", _r.status != _WAITING
)

# The claim, one write statement: the oldest runs that are queued, or running under a lease
# that lapsed (their worker died), each of a chat with no older active run (one run at a
# time per chat, in order: a chat's second queued run is never taken with its first, whose
# being active excludes it), up to ``limit`` of them. ``SKIP LOCKED`` (PostgreSQL) lets
# racing workers pass over the runs another is taking; SQLite has one writer, and there the
# lock clause compiles to nothing.
_candidate = runs.alias("candidate")
_older = runs.alias("older")
_k = _candidate.c
_o = _older.c
_CLAIMABLE_WHERE = (
    _active(_k),
    sa.or_(_k.status == _QUEUED, _k.lease_expires_at < sa.bindparam("now")),
    ~sa.exists().where(_o.chat_pk == _k.chat_pk, _o.pk < _k.pk, _active(_o)),
)
# Only the turns of one agent's chats: a process whose agents use models of different limits
# (a local engine's few slots, a remote provider's many) claims for each as it has room.
_OF_AGENT = sa.exists().where(
    ai_chats.c.pk == _k.chat_pk, ai_chats.c.agent_identifier == sa.bindparam("agent_identifier")
)


def _probe(*where: sa.ColumnElement[bool]) -> sa.Select[tuple[int]]:
    """The same question read-only, asked first: an idle poll (most of them: every process,
    every second) is then one read, not a write transaction (on SQLite, ``BEGIN IMMEDIATE``
    under the one write lock, which API writes wait for)."""
    return sa.select(_k.pk).where(*_CLAIMABLE_WHERE, *where).order_by(_k.pk).limit(1)


_CLAIMED = (
    _r.pk, _r.id, _r.chat_pk, _r.trigger, _r.user_message_pk, _r.assistant_message_pk, _r.attempts, _r.resumes,
    _r.created_at,
)  # fmt: skip


def _claim(*where: sa.ColumnElement[bool]) -> sa.Update:
    claimable = (
        sa.select(_k.pk)
        .where(*_CLAIMABLE_WHERE, *where)
        .order_by(_k.pk)
        .limit(sa.bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return (
        sa.update(runs)
        .where(_r.pk.in_(claimable))
        .values(
            status="running",
            worker_id=sa.bindparam("worker_id"),
            lease_expires_at=sa.bindparam("lease_expires_at"),
            attempts=_r.attempts + 1,
            started_at=sa.func.coalesce(_r.started_at, sa.bindparam("now")),
        )
        .returning(*_CLAIMED)
    )


_PROBE = _probe()
_CLAIM = _claim()
_PROBE_OF_AGENT = _probe(_OF_AGENT)
_CLAIM_OF_AGENT = _claim(_OF_AGENT)
_MINE = (_r.pk == sa.bindparam("run_pk"), _r.attempts == sa.bindparam("attempt"), _r.status == "running")
# Every run a process holds, renewed in one statement: the claims, each with its attempt (the
# fence), bound as one JSON array; the runs renewed come back (those missing were lost).
_held = json_records("held", pk=sa.BigInteger(), attempt=sa.Integer())
_RENEW = (
    sa.update(runs)
    .where(_r.status == "running", sa.tuple_(_r.pk, _r.attempts).in_(sa.select(_held.c.pk, _held.c.attempt)))
    .values(lease_expires_at=sa.bindparam("lease_expires_at"))
    .returning(_r.pk, _r.attempts)
)
_SUSPEND = sa.update(runs).where(*_MINE).values(status="waiting", lease_expires_at=None, worker_id=None)
_RESUME = (
    sa.update(runs)
    .where(_r.pk == sa.bindparam("run_pk"), _r.status == "waiting")
    .values(status="queued", resumes=_r.resumes + 1)
    .returning(_r.chat_pk)
)
_CANCEL = (
    sa.update(runs)
    .where(_r.chat_pk == sa.bindparam("chat_pk"), _r.assistant_message_pk == sa.bindparam("message_pk"), _active(_r))
    .values(status="cancelled", finished_at=sa.bindparam("now"), lease_expires_at=None, error="stopped by the user")
    .returning(_r.pk)
)
_HOLD = sa.select(_r.pk).where(*_MINE).with_for_update()
_LOCK = sa.select(_r.pk).where(_r.pk == sa.bindparam("run_pk")).with_for_update()
_SET_MESSAGE = sa.update(runs).where(*_MINE).values(assistant_message_pk=sa.bindparam("message_pk"))
_FINISH = (
    sa.update(runs)
    .where(*_MINE)
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("now"),
        error=sa.bindparam("error"),
        lease_expires_at=None,
        model=sa.bindparam("model"),
        input_tokens=sa.bindparam("input_tokens"),
        output_tokens=sa.bindparam("output_tokens"),
        blended_tokens_micros=sa.bindparam("blended_tokens_micros"),
    )
)


@dataclass(frozen=True, slots=True)
class Claim:
    """A run held by a worker: ``attempt`` fences every write it makes (a worker whose
    lease lapsed, and whose run another worker took, can no longer change it)."""

    pk: int
    id: str
    chat_pk: int
    trigger: str
    user_message_pk: int | None
    assistant_message_pk: int | None
    attempt: int
    resumes: int = 0  # claims that resumed it after an approval (not failures)
    queued_at: int = 0  # when the run was queued (created_at): its wait for a worker (metrics)

    @property
    def fence(self) -> dict[str, int]:
        return {"run_pk": self.pk, "attempt": self.attempt}


async def queue(
    tx: Connection,
    chat_pk: int,
    *,
    trigger: str,
    user_message_pk: int,
    reply_pk: int,
    scheduled_for: int | None,
    now: int,
) -> None:
    """Queue the agent's turn that writes ``reply_pk`` in answer to ``user_message_pk``, and
    wake the workers (the NOTIFY goes out when ``tx`` commits)."""
    run = {
        "id": ids.new_id(ids.RUN),
        "chat_pk": chat_pk,
        "trigger": trigger,
        "status": "queued",
        "user_message_pk": user_message_pk,
        "assistant_message_pk": reply_pk,
        "scheduled_for": scheduled_for,
        "created_at": now,
    }
    await tx.execute(_INSERT, run)
    await tx.notify(CHANNEL, str(chat_pk))


@dataclass(frozen=True, slots=True)
class NewTurn:
    """A turn for :func:`queue_many`: the reply ``reply_pk`` to ``user_message_pk``."""

    chat_pk: int
    trigger: str
    user_message_pk: int
    reply_pk: int
    scheduled_for: int | None = None


_new_runs = json_records(
    "runs", ord=sa.Integer(), id=sa.Text(), chat_pk=sa.BigInteger(), trigger=sa.Text(),
    user_message_pk=sa.BigInteger(), assistant_message_pk=sa.BigInteger(), scheduled_for=sa.BigInteger(),
)  # fmt: skip
_INSERT_MANY = sa.insert(runs).from_select(
    [
        "id", "chat_pk", "trigger", "status", "user_message_pk", "assistant_message_pk", "scheduled_for",
        "created_at",
    ],
    sa.select(
        _new_runs.c.id, _new_runs.c.chat_pk, _new_runs.c.trigger, _QUEUED, _new_runs.c.user_message_pk,
        _new_runs.c.assistant_message_pk, _new_runs.c.scheduled_for, sa.bindparam("now", type_=sa.BigInteger),
    ).order_by(_new_runs.c.ord),  # claimed in this order: pks follow it
)  # fmt: skip
# Which (chat, instant) pairs already have a scheduled turn: one probe each of the unique
# index on (chat_pk, scheduled_for), whose predicate the literal matches.
_fires = json_records("fires", chat_pk=sa.BigInteger(), at=sa.BigInteger())
_ALREADY_FIRED = sa.select(_fires.c.chat_pk, _fires.c.at).where(
    sa.exists().where(
        _r.chat_pk == _fires.c.chat_pk,
        _r.scheduled_for == _fires.c.at,
        _r.trigger == sa.literal_column("'schedule'", sa.String()),
    )
)


async def queue_many(tx: Connection, turns: Sequence[NewTurn], now: int) -> None:
    """:func:`queue` for many turns, in this order, in one statement and one notification
    (:func:`aichats.services.events.notify_keys`), whatever their number."""
    if not turns:
        return
    records = [
        {
            "ord": n, "id": ids.new_id(ids.RUN), "chat_pk": t.chat_pk, "trigger": t.trigger,
            "user_message_pk": t.user_message_pk, "assistant_message_pk": t.reply_pk, "scheduled_for": t.scheduled_for,
        }
        for n, t in enumerate(turns)
    ]  # fmt: skip
    await tx.execute(_INSERT_MANY, {"runs": orjson.dumps(records).decode(), "now": now})
    await notify_keys(tx, CHANNEL, (t.chat_pk for t in turns))


async def already_fired(tx: Connection, fires: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which of the ``(chat_pk, scheduled_for)`` instants already have a scheduled turn."""
    if not fires:
        return set()
    records = orjson.dumps([{"chat_pk": c, "at": at} for c, at in fires]).decode()
    return {(row["chat_pk"], row["at"]) for row in await tx.fetch_all(_ALREADY_FIRED, {"fires": records})}


async def answered_by(tx: Connection, chat_pk: int, reply_pk: int) -> int | None:
    """The user message the reply ``reply_pk`` answers (as its latest run says), if any."""
    row = await tx.fetch_one(_ANSWERED, {"chat_pk": chat_pk, "message_pk": reply_pk})
    return None if row is None else row["user_message_pk"]


async def scheduled_in_flight(db: Database) -> int:
    """How many scheduled turns are queued or running (the scheduler's in-flight limit)."""
    row = await db.fetch_one(_SCHEDULED_IN_FLIGHT)
    return 0 if row is None else int(row["n"])


async def claim(db: Database, worker_id: str, lease_ms: int) -> Claim | None:
    """Claim the oldest runnable run for ``lease_ms``, counting the attempt; None when none is."""
    claimed = await claim_many(db, worker_id, lease_ms, 1)
    return claimed[0] if claimed else None


async def claim_many(
    db: Database, worker_id: str, lease_ms: int, limit: int, *, agent_identifier: str | None = None
) -> list[Claim]:
    """Claim up to ``limit`` of the oldest runnable runs (of ``agent_identifier``'s chats
    only, when given) for ``lease_ms``, counting each one's attempt; oldest first.

    A read finds whether there is anything to claim; only then does the claim's write
    transaction run. The claiming ``UPDATE`` keeps its own whole condition, so a run taken
    between the two (by another worker) is simply not claimed again: the claim gets the
    next ones, or nothing.
    """
    now = now_ms()
    probe, statement = (_PROBE, _CLAIM) if agent_identifier is None else (_PROBE_OF_AGENT, _CLAIM_OF_AGENT)
    params: dict[str, Any] = {"now": now}
    if agent_identifier is not None:
        params["agent_identifier"] = agent_identifier
    if await db.fetch_one(probe, params) is None:
        return []
    params.update(worker_id=worker_id, lease_expires_at=now + lease_ms, limit=limit)
    async with db.transaction() as tx:
        rows = await tx.fetch_all(statement, params)
    return sorted((_claimed(row) for row in rows), key=lambda claim: claim.pk)


def _claimed(row: Row) -> Claim:
    return Claim(
        row["pk"], row["id"], row["chat_pk"], row["trigger"], row["user_message_pk"], row["assistant_message_pk"],
        row["attempts"], row["resumes"], row["created_at"],
    )  # fmt: skip


async def renew(db: Database, run: Claim, lease_ms: int) -> bool:
    """Extend one run's lease; False if the run is no longer this worker's."""
    return (run.pk, run.attempt) in await renew_all(db, [run], lease_ms)


async def renew_all(db: Database, held: Sequence[Claim], lease_ms: int) -> set[tuple[int, int]]:
    """Extend the leases of every run in ``held``, in one statement; the ``(pk, attempt)`` of
    those renewed (a run missing is no longer this claim's: finished, stopped, or taken
    over after its lease lapsed)."""
    if not held:
        return set()
    records = orjson.dumps([{"pk": run.pk, "attempt": run.attempt} for run in held]).decode()
    async with db.transaction() as tx:
        rows = await tx.fetch_all(_RENEW, {"held": records, "lease_expires_at": now_ms() + lease_ms})
    return {(row["pk"], row["attempts"]) for row in rows}


async def set_message(tx: Connection, run: Claim, message_pk: int) -> bool:
    """Record the reply a run without one is writing; False if the run is no longer ours."""
    return await tx.execute(_SET_MESSAGE, {**run.fence, "message_pk": message_pk}) == 1


async def finish(
    tx: Connection,
    run: Claim,
    *,
    status: str,
    error: str | None = None,
    model: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    blended_tokens_micros: int = 0,
) -> bool:
    """Mark the run done (``completed``, ``failed`` or ``cancelled``); False if it was not ours."""
    params = {
        **run.fence, "status": status, "error": error, "now": now_ms(), "model": model, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "blended_tokens_micros": blended_tokens_micros,
    }  # fmt: skip
    return await tx.execute(_FINISH, params) == 1


async def suspend(tx: Connection, run: Claim) -> bool:
    """The run waits for the user's decision on a tool call: no worker holds it meanwhile,
    and it still holds its chat's later turns back. False if it was no longer ours."""
    return await tx.execute(_SUSPEND, run.fence) == 1


async def resume(tx: Connection, run_pk: int) -> bool:
    """A waiting run goes back to the queue (the user decided); False if it was not waiting."""
    row = await tx.fetch_one(_RESUME, {"run_pk": run_pk})
    if row is None:
        return False
    await tx.notify(CHANNEL, str(row["chat_pk"]))
    return True


async def cancel(tx: Connection, chat_pk: int, message_pk: int, now: int) -> int | None:
    """Stop the active run writing the reply ``message_pk`` (the pk of the run, or None if
    none was active); its worker, in any process, is told to cancel the turn at once."""
    row = await tx.fetch_one(_CANCEL, {"chat_pk": chat_pk, "message_pk": message_pk, "now": now})
    if row is None:
        return None
    await tx.notify(CANCEL_CHANNEL, str(row["pk"]))
    return int(row["pk"])


_of_runs = json_records("runs", pk=sa.BigInteger())
_CANCELLED_AMONG = sa.select(_r.pk).where(_r.pk.in_(sa.select(_of_runs.c.pk)), _r.status == "cancelled")


async def cancelled_among(db: Database, run_pks: Sequence[int]) -> list[int]:
    """Which of the runs ``run_pks`` are cancelled (stopped by their user), in one read."""
    if not run_pks:
        return []
    records = orjson.dumps([{"pk": pk} for pk in run_pks]).decode()
    return [row["pk"] for row in await db.fetch_all(_CANCELLED_AMONG, {"runs": records})]


async def hold(tx: Connection, run: Claim) -> bool:
    """Whether the run is still this claim's, locking it for the rest of ``tx`` (a write that
    is not a fenced UPDATE of ``runs`` itself checks the fence this way)."""
    return await tx.fetch_one(_HOLD, run.fence) is not None


async def lock(tx: Connection, run_pk: int) -> None:
    """Lock the run's row for the rest of ``tx`` (PostgreSQL; SQLite's one writer already
    serialises transactions): what a change to its calls takes first, as Stop does."""
    await tx.fetch_one(_LOCK, {"run_pk": run_pk})
