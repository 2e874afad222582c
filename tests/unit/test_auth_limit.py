"""The failed-authentication limiter's window and memory bound, on a clock of our own."""

from __future__ import annotations

from aichats.api.auth_limit import FailedAuthLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_failure_per_refill_then_forgotten() -> None:
    clock = Clock()
    limit = FailedAuthLimit(10, clock=clock)
    for _ in range(10):
        assert limit.retry_after("1.2.3.4", "ak_guess") == 0
        limit.failed("1.2.3.4", "ak_guess")
    assert limit.retry_after("1.2.3.4", "ak_guess") == 6  # one token per 60/10 s
    assert limit.retry_after("5.6.7.8", "ak_guess") == 0  # another client is not concerned
    clock.now += 2.5
    assert limit.retry_after("1.2.3.4", "ak_guess") == 4  # rounded up: never too early
    clock.now += 3.5
    assert limit.retry_after("1.2.3.4", "ak_guess") == 0
    limit.failed("1.2.3.4", "ak_guess")
    assert limit.retry_after("1.2.3.4", "ak_guess") == 6
    clock.now += 60
    assert limit.retry_after("1.2.3.4", "ak_guess") == 0
    assert len(limit) == 0  # a full bucket is forgotten


def test_an_accepted_key_passes_a_blocked_client_until_it_fails() -> None:
    clock = Clock()
    limit = FailedAuthLimit(2, clock=clock)
    limit.accepted("ak_real")
    limit.failed("nat", "ak_guess")
    limit.failed("nat", "ak_guess")
    assert limit.retry_after("nat", "ak_guess") == 30
    assert limit.retry_after("nat", "ak_other_real_but_never_seen") == 30
    assert limit.retry_after("nat", "ak_real") == 0
    limit.failed("nat", "ak_real")  # revoked since: no longer trusted
    assert limit.retry_after("nat", "ak_real") == 30


def test_memory_is_bounded_least_recently_failing_first() -> None:
    limit = FailedAuthLimit(1, max_clients=3, max_accepted_keys=2, clock=Clock())
    for client in ("a", "b", "c"):
        limit.failed(client, "x")
    limit.failed("a", "x")  # a failed again: b is now the oldest
    limit.failed("d", "x")
    assert len(limit) == 3
    assert limit.retry_after("b", "x") == 0  # forgotten
    assert all(limit.retry_after(client, "x") > 0 for client in ("a", "c", "d"))
    for key in ("k1", "k2", "k3"):
        limit.accepted(key)
    assert limit.retry_after("a", "k1") > 0  # the oldest accepted key was forgotten
    assert limit.retry_after("a", "k2") == limit.retry_after("a", "k3") == 0


def test_zero_turns_the_limit_off() -> None:
    limit = FailedAuthLimit(0, clock=Clock())
    for _ in range(1000):
        limit.failed("1.2.3.4", "ak_guess")
    assert limit.retry_after("1.2.3.4", "ak_guess") == 0
    assert len(limit) == 0


def test_an_ipv6_client_counts_as_its_64() -> None:
    from starlette.requests import Request

    from aichats.api.auth import client_address

    def address(host: str) -> str:
        return client_address(Request({"type": "http", "client": (host, 1234), "headers": []}))

    assert address("2001:db8:1:2::1") == address("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address("2001:db8:1:3::1") != address("2001:db8:1:2::1")
    assert address("203.0.113.7") == "203.0.113.7"
    assert address("::ffff:203.0.113.7") == "203.0.113.7"  # not all IPv4 clients in one ::/64
