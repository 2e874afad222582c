"""A per-client limit on failed authentication (bad or revoked keys, failed sign-ins).

Each client address has a token bucket of ``per_minute`` failures that refills at
``per_minute`` a minute: a burst of ``per_minute`` wrong keys, then one every
``60 / per_minute`` seconds. While its bucket is empty, a client's credentials are not
checked at all: it gets 429 with ``Retry-After``, so a guess cannot be confirmed (a
right one would otherwise stand out from the wrong ones).

One exception keeps the real users behind the same address (a NAT, an office, a proxy
whose ``X-Forwarded-For`` is not trusted) working while someone there guesses: a key
this process has accepted recently, from any client, is still checked and served. A
guess gets through only if it is a live key in use, which 192 random bits make hopeless.

State lives in this process's memory (each server process counts on its own) and is
bounded: the least recently failing clients and the oldest accepted keys are forgotten
first, so an attack from many addresses costs a fixed amount of memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class FailedAuthLimit:
    """Failures allowed per client address; ``per_minute=0`` turns the limit off.

    The bucket is kept as one number per client (the generic cell rate algorithm): the
    time at which its bucket will be full again, pushed ``60 / per_minute`` seconds further
    by each failure. A client is blocked while that time is more than a burst ahead.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        max_clients: int = 10_000,
        max_accepted_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self.max_accepted_keys = max_accepted_keys
        self._interval = 60 / per_minute if per_minute else 0.0  # seconds one failure costs
        self._burst = self._interval * (per_minute - 1)  # how far ahead a client may run
        self._clock = clock
        self._full_at: OrderedDict[str, float] = OrderedDict()  # per client, least recently failing first
        self._accepted: dict[str, None] = {}  # hashes of accepted keys, oldest first

    def __len__(self) -> int:
        return len(self._full_at)

    @property
    def blocking(self) -> bool:
        """Whether any client has failures counted: if not, :meth:`retry_after` is 0 for
        every client, and a caller need not work out which client it is."""
        return bool(self._full_at)

    def retry_after(self, client: str, key_hash: str) -> int:
        """Seconds ``client`` must wait before the key of ``key_hash`` is checked; 0 when it may
        be checked now. Keys are known by their hash (:func:`aichats.services.keys.hash_key`,
        the one the lookup uses too), never in clear."""
        if not self._full_at:  # the usual case: nobody has failed lately
            return 0
        full_at = self._full_at.get(client)
        if full_at is None:
            return 0
        now = self._clock()
        if full_at <= now:  # refilled: forget the client, keep the table small
            del self._full_at[client]
            return 0
        wait = full_at - now - self._burst
        if wait <= 0 or key_hash in self._accepted:
            return 0
        return math.ceil(wait)

    def failed(self, client: str, key_hash: str) -> None:
        """Count a failed attempt by ``client``; ``key_hash``'s key is no longer one to trust."""
        if not self.per_minute:
            return
        self._accepted.pop(key_hash, None)
        now = self._clock()
        full_at = max(self._full_at.pop(client, now), now) + self._interval
        self._full_at[client] = min(full_at, now + 60)  # a bucket is at most empty: a minute to refill
        if len(self._full_at) > self.max_clients:
            self._full_at.popitem(last=False)

    def accepted(self, key_hash: str) -> None:
        """Remember that ``key_hash``'s key is live, so that it still works from a blocked address."""
        if not self.per_minute:
            return
        if key_hash not in self._accepted:
            self._accepted[key_hash] = None
            if len(self._accepted) > self.max_accepted_keys:
                del self._accepted[next(iter(self._accepted))]
