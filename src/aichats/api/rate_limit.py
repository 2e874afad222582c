"""The rate limit per API key and operation (``AICHATS_RATE_LIMIT_PER_MINUTE``), as one
server process applies it.

Each (key, operation) may make ``per_minute`` requests in each UTC minute (a fixed window),
counted across every server process on the database. The count lives in the database
(:mod:`aichats.services.rate_limits`); this process reserves blocks of requests from it
and admits from its block in memory, so that most requests cost a dict lookup and no
round trip. A block is never more than the minute has left, so the requests admitted by
all processes never exceed the limit; blocks shrink as the minute runs out (at the end
they are of one request), so whichever process has requests then gets what is left.

Why the database and not Redis: it is already there, on SQLite as on PostgreSQL, and
with blocks its cost is one small write per block (at most one per request near the end
of a minute, at most one per thousand when the limit is far): ``bench/api.py`` measures
what the limit costs ``retrieve``. Redis would add a service to run for no measured need.

What this process has reserved and not admitted when a minute ends is lost (never
admitted twice): a process that stops getting requests mid-minute holds at most a
sixteenth of what the minute had left when it last reserved, which the others then lack
until the next minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aichats.errors import RateLimited
from aichats.services import rate_limits
from aichats.storage.database import Database

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class _Slot:
    """This process's share of one key's requests to one operation in one minute."""

    minute: int
    unreserved: int  # what the minute still had for every process after this one's last reservation
    left: int = 0  # requests reserved by this process and not yet admitted
    spent: bool = False  # the database granted nothing more: every further request this minute is refused
    reserving: asyncio.Event | None = None  # set when the reservation under way ends


class RateLimiter:
    """Admits a key's requests to an operation up to ``per_minute`` a minute, or refuses them
    with :class:`~aichats.errors.RateLimited` (429, ``Retry-After``). ``per_minute`` > 0."""

    def __init__(self, db: Database, per_minute: int, *, clock: Callable[[], float] = time.time) -> None:
        assert per_minute > 0
        self.db = db
        self.per_minute = per_minute
        self._clock = clock
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._minute = 0  # the newest minute seen: slots of older ones are forgotten when it moves
        self._limit_header = (b"ratelimit-limit", str(per_minute).encode())
        # Made by _enter once a second, for the second [_second_starts, _second_ends):
        self._second_starts = self._second_ends = 0
        self._current = 0  # its minute
        self._reset_header = (b"ratelimit-reset", b"")

    def take(self, key_id: str, operation: str) -> Headers | None:
        """The request's ``RateLimit-*`` headers if this process's block admits it (the usual
        case: no await, no database); None when the block is empty: then call :meth:`admit`.
        Every request goes through here: it reads the clock once and makes no more than the
        remaining count (bench/api.py measures what the limit costs ``retrieve``)."""
        now = self._clock()
        if not self._second_starts <= now < self._second_ends:
            self._enter(now)
        slot = self._slots.get((key_id, operation))
        if slot is None or slot.left <= 0 or slot.minute != self._current:
            return None
        slot.left -= 1
        return self._headers(slot)

    async def admit(self, key_id: str, operation: str) -> Headers:
        """Admit the request (its ``RateLimit-*`` headers), reserving a block from the
        database if needed; or raise :class:`RateLimited`. One reservation at a time per key
        and operation in this process: requests that arrive meanwhile wait for it."""
        key = (key_id, operation)
        while True:
            now = self._clock()
            self._enter(now)
            minute = self._current
            slot = self._slots.get(key)
            if slot is None or slot.minute != minute:
                slot = self._slots[key] = _Slot(minute, unreserved=self.per_minute)
            if slot.left > 0:
                slot.left -= 1
                return self._headers(slot)
            if slot.spent:
                raise self._refusal(now)
            if slot.reserving is not None:
                await slot.reserving.wait()
                continue
            slot.reserving = reserved = asyncio.Event()
            try:
                grant = await rate_limits.reserve(
                    self.db, key_id=key_id, operation=operation, minute=minute, limit=self.per_minute
                )
            finally:
                slot.reserving = None
                reserved.set()
            slot.left += grant.granted
            slot.unreserved = max(self.per_minute - grant.used, 0)
            slot.spent = grant.granted == 0

    def _enter(self, now: float) -> None:
        """Make what depends only on the second ``now`` is in: its minute and the
        ``RateLimit-Reset`` header (:func:`_reset`). When a newer minute starts, drop the
        slots of older ones (the table stays the size of one minute's keys and operations)."""
        second = int(now)
        self._second_starts, self._second_ends = second, second + 1
        self._current = minute = second // 60
        self._reset_header = (b"ratelimit-reset", b"%d" % _reset(now))
        if minute > self._minute:
            self._minute = minute
            self._slots = {key: slot for key, slot in self._slots.items() if slot.minute >= minute}

    def _headers(self, slot: _Slot) -> Headers:
        """``RateLimit-Remaining`` is what this process knows: its block, and what the minute
        had left for everyone at its last reservation (other processes may have taken some)."""
        return [self._limit_header, (b"ratelimit-remaining", b"%d" % (slot.left + slot.unreserved)), self._reset_header]

    def _refusal(self, now: float) -> RateLimited:
        wait = _reset(now)
        unit = "second" if wait == 1 else "seconds"
        headers = {
            "Retry-After": str(wait),
            "RateLimit-Limit": str(self.per_minute),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(wait),
        }
        message = (
            f"Too many requests to this operation with this API key (at most {self.per_minute} a minute). "
            f"Try again in {wait} {unit}."
        )
        return RateLimited(message, headers=headers)


def _reset(now: float) -> int:
    """Whole seconds until the next minute starts (1 to 60): ``60 - int(now) % 60``, the
    same all through each second."""
    return 60 - int(now) % 60
