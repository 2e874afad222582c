"""The run queue: claiming, lease renewal and finishing, with the database coordinating.

A worker claims the oldest runnable run with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL;
SQLite serialises writers anyway). A run is runnable when it is queued, or when it is
running under a lease that has lapsed (its worker died), and no earlier run of the same
chat is still active: one run at a time per chat, in order. Every later write names the
attempt it belongs to, so a worker that lost its lease can no longer change the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aichats.clock import now_ms
from aichats.storage.database import Connection, Database
from aichats.storage.schema import runs

_r = runs.c
ACTIVE = sa.text("status IN ('queued', 'running')")
SCAN = 500  # active runs read per claim, oldest first

# The oldest active runs, read in pk order straight off the partial index (a plan that
# stale statistics cannot spoil). The first run of each chat in this list is that chat's
# oldest active run: the only one of the chat that may run.
_OLDEST_ACTIVE = sa.select(_r.pk, _r.chat_pk, _r.status, _r.lease_expires_at).where(ACTIVE).order_by(_r.pk).limit(SCAN)
# Take one candidate, if it is still claimable and no other worker holds it.
_CLAIM = (
    sa.update(runs)
    .where(
        _r.pk
        == sa.select(_r.pk)
        .where(
            _r.pk == sa.bindparam("run_pk"),
            sa.or_(_r.status == "queued", sa.and_(_r.status == "running", _r.lease_expires_at < sa.bindparam("now"))),
        )
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    .values(
        status="running",
        worker_id=sa.bindparam("worker_id"),
        lease_expires_at=sa.bindparam("lease_expires_at"),
        attempts=_r.attempts + 1,
        started_at=sa.func.coalesce(_r.started_at, sa.bindparam("now")),
    )
    .returning(_r.pk, _r.id, _r.chat_pk, _r.trigger, _r.user_message_pk, _r.assistant_message_pk, _r.attempts)
)
_MINE = (_r.pk == sa.bindparam("run_pk"), _r.attempts == sa.bindparam("attempt"), _r.status == "running")
_RENEW = sa.update(runs).where(*_MINE).values(lease_expires_at=sa.bindparam("lease_expires_at"))
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
    """A run held by this worker: ``attempt`` fences every write it makes."""

    pk: int
    id: str
    chat_pk: int
    trigger: str
    user_message_pk: int | None
    assistant_message_pk: int | None
    attempt: int

    @property
    def fence(self) -> dict[str, int]:
        return {"run_pk": self.pk, "attempt": self.attempt}


def runnable(active: list[Any], now: int) -> list[int]:
    """Of the oldest active runs (in pk order), those that may be claimed: the oldest of
    its chat, and queued or abandoned (lease lapsed)."""
    seen: set[int] = set()
    out = []
    for run in active:
        if run["chat_pk"] in seen:
            continue  # an earlier run of this chat is still active
        seen.add(run["chat_pk"])
        if run["status"] == "queued" or (run["lease_expires_at"] or 0) < now:
            out.append(run["pk"])
    return out


async def claim(db: Database, worker_id: str, lease_ms: int) -> Claim | None:
    """Claim the oldest runnable run. Each candidate is taken with a conditional UPDATE
    (``FOR UPDATE SKIP LOCKED`` on PostgreSQL): of two workers racing, one wins and the
    other moves on to the next candidate. Runs only move forward (queued, running,
    finished) and new runs get higher pks, so a run seen as its chat's oldest active one
    stays so until it is claimed."""
    now = now_ms()
    row = None
    for run_pk in runnable(await db.fetch_all(_OLDEST_ACTIVE), now):
        async with db.transaction() as tx:
            row = await tx.fetch_one(
                _CLAIM, {"run_pk": run_pk, "now": now, "worker_id": worker_id, "lease_expires_at": now + lease_ms}
            )
        if row is not None:
            break
    if row is None:
        return None
    return Claim(
        row["pk"],
        row["id"],
        row["chat_pk"],
        row["trigger"],
        row["user_message_pk"],
        row["assistant_message_pk"],
        row["attempts"],
    )


async def renew(db: Database, run: Claim, lease_ms: int) -> bool:
    """Extend the lease; False if the run is no longer this worker's."""
    async with db.transaction() as tx:
        return await tx.execute(_RENEW, {**run.fence, "lease_expires_at": now_ms() + lease_ms}) == 1


async def set_message(tx: Connection, run: Claim, message_pk: int) -> bool:
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
    return (
        await tx.execute(
            _FINISH,
            {
                **run.fence,
                "status": status,
                "error": error,
                "now": now_ms(),
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "blended_tokens_micros": blended_tokens_micros,
            },
        )
        == 1
    )
