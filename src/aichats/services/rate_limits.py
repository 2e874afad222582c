"""The shared count of rate limits: requests granted per API key, operation and minute.

Every server process on the database draws from one row per (key, operation). A process
does not ask for each request: it reserves a *block* of requests in one statement and
serves the block from memory (:class:`aichats.api.rate_limit.RateLimiter`). The statement
grants at most what the minute has left, so the requests admitted by all processes
together never exceed the limit; and blocks shrink as the minute's budget runs out (a
sixteenth of what is left, at least one), so that at the edge the last requests are
granted one by one, to whichever process asks. A row from an earlier minute starts over
at 0 when a later minute's first block is reserved: one row per key and operation, for
ever, and nothing to purge.

Minutes are the processes' own clocks (``time.time()``, UTC). A process whose clock lags
behind the row's minute draws from the row's (newer) minute: a skewed clock can only make
the limit stricter, never grant a minute twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from aichats.storage.database import Database
from aichats.storage.schema import rate_limits

SHARE = 16  # a block is this fraction of what the minute has left...
MAX_BLOCK = 1_000  # ...and at most this many requests

_r = rate_limits.c
_minute = sa.bindparam("minute", type_=sa.BigInteger)
_limit = sa.bindparam("limit", type_=sa.Integer)
# What the row has used of the caller's minute (0 when the row is of an older minute).
_current = sa.case((_r.minute >= _minute, _r.used), else_=0)
_left = _limit - _current
_share = _left // SHARE  # integer division on both databases
_grant = sa.case((_left <= 0, 0), (_share <= 1, 1), (_share >= MAX_BLOCK, MAX_BLOCK), else_=_share)
_INSERT = postgresql.insert(rate_limits).values(
    key_id=sa.bindparam("key_id"),
    operation=sa.bindparam("operation"),
    minute=_minute,
    used=sa.bindparam("first"),
    granted=sa.bindparam("first"),
)
# One statement, on both databases (SQLite speaks ``ON CONFLICT`` too): the grant is computed
# from the row as it is when the statement locks it, so concurrent reservations (of any
# process) queue on the row and never grant the same request twice. Every SET reads the
# row's old values.
_RESERVE = _INSERT.on_conflict_do_update(
    index_elements=[_r.key_id, _r.operation],
    set_={
        "minute": sa.case((_r.minute >= _minute, _r.minute), else_=_minute),
        "used": _current + _grant,
        "granted": _grant,
    },
).returning(_r.used, _r.granted)


@dataclass(frozen=True, slots=True)
class Grant:
    """A reserved block: ``granted`` requests (0: the minute is used up), and ``used``, what
    every process together has been granted of the minute so far, this block included."""

    granted: int
    used: int


def first_block(limit: int) -> int:
    """The block of a minute's first reservation (what ``_RESERVE`` grants from a fresh row)."""
    return min(max(limit // SHARE, 1), MAX_BLOCK, limit)


async def reserve(db: Database, *, key_id: str, operation: str, minute: int, limit: int) -> Grant:
    """Reserve a block of ``key_id``'s requests to ``operation`` in ``minute`` (of ``limit``)."""
    params = {
        "key_id": key_id,
        "operation": operation,
        "minute": minute,
        "limit": limit,
        "first": first_block(limit),
    }
    row = await db.write_one(_RESERVE, params)
    assert row is not None
    return Grant(granted=int(row["granted"]), used=int(row["used"]))
