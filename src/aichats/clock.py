"""Time as the service sees it: integer milliseconds since the Unix epoch, UTC.

Everything that needs "now" calls :func:`now_ms`, so tests and operators' commands can
move time by swapping the one function (``set_clock``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _real_clock() -> int:
    return time.time_ns() // 1_000_000


_clock: Callable[[], int] = _real_clock


def now_ms() -> int:
    return _clock()


def set_clock(clock: Callable[[], int] | None) -> None:
    """Replace the clock (``None`` restores the real one)."""
    global _clock
    _clock = clock or _real_clock


def isoformat_ms(ms: int) -> str:
    """``2023-12-01T05:00:00.401Z``: ISO 8601, UTC, milliseconds, as the API writes it."""
    seconds, millis = divmod(ms, 1000)
    return _second(seconds) + _MILLIS[millis]


def isoformat_ms_or_none(ms: int | None) -> str | None:
    return None if ms is None else isoformat_ms(ms)


# Formatting dominated serialising a list of chats (three instants each). The instants of
# the lists read most (first pages, a busy minute's messages) repeat: formatted seconds are
# cached (0.3 µs an instant). Scattered ones (deep pages) miss that cache, but share days:
# the day is cached too and the rest read from tables (0.6 µs, where strftime took 1.6).
@lru_cache(maxsize=65_536)
def _second(seconds: int) -> str:
    days, second = divmod(seconds, 86_400)
    minute, second = divmod(second, 60)
    return f"{_day(days)}{_HH_MM[minute]}{_SS[second]}"


@lru_cache(maxsize=4096)
def _day(days: int) -> str:
    return time.strftime("%Y-%m-%dT", time.gmtime(days * 86_400))


_HH_MM = tuple(f"{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60))
_SS = tuple(f"{second:02d}" for second in range(60))
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


def parse_iso(value: str) -> int:
    """Milliseconds of an ISO 8601 instant (naive values are taken as UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // timedelta(milliseconds=1)
