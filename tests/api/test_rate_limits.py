"""The rate limit per API key and operation: 429 with its headers past the limit, a count per
key and per operation (the web app's cookie counting as its key), a new count each minute,
and one exact count shared by several server processes on one database."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from aichats.api.rate_limit import RateLimiter
from tests.conftest import NO_AUTH_LIMIT
from tests.support.accounts import Account
from tests.support.api import assert_error, create
from tests.support.servers import AppServer, LiveServer, serving


class Clock:
    """A settable clock for the limiter (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(database_url: str, tmp_path: Path) -> Iterator[tuple[AppServer, Clock]]:
    """The app in this process with a limit of 5 a minute, on a clock the test moves."""
    with AppServer(
        database_url, tmp_path / "files", auth_failures_per_minute=int(NO_AUTH_LIMIT), rate_limit_per_minute=5
    ) as server:
        clock = Clock(1_800_000_000.0)  # the start of a minute
        server.app.state.rate_limiter = RateLimiter(server.app.state.db, 5, clock=clock)
        yield server, clock


def limit_headers(response: httpx2.Response) -> tuple[int, int, int]:
    headers = response.headers
    return int(headers["ratelimit-limit"]), int(headers["ratelimit-remaining"]), int(headers["ratelimit-reset"])


def test_past_the_limit_429_with_retry_after_and_the_headers(limited: tuple[AppServer, Clock]) -> None:
    server, clock = limited
    account = server.account()
    with server.client(account) as api:
        chat = create(api)  # createAiChat: a count of its own
        seen = []
        for _ in range(5):
            clock.now += 1  # 1 s into the minute, then 2...
            response = api.get(f"/ai_chats/{chat['id']}")
            assert response.status_code == 200, response.text
            seen.append(limit_headers(response))
        assert seen == [(5, 4, 59), (5, 3, 58), (5, 2, 57), (5, 1, 56), (5, 0, 55)]
        clock.now += 0.5  # 5.5 s into the minute: 54.5 s to go, said as 55
        refused = api.get(f"/ai_chats/{chat['id']}")
        assert_error(refused, 429, "rate_limit_exceeded", "Try again in 55 seconds.")
        assert refused.headers["retry-after"] == "55"
        assert limit_headers(refused) == (5, 0, 55)
        # Other operations, and the same operation with another key, count apart.
        assert api.get("/ai_chats").status_code == 200
        other = server.account()
        with server.client(other) as second:
            assert second.get("/ai_chats").status_code == 200
        # A new minute, a new count.
        clock.now += 55
        response = api.get(f"/ai_chats/{chat['id']}")
        assert response.status_code == 200 and limit_headers(response) == (5, 4, 60)


def test_ratelimit_reset_counts_whole_seconds_to_the_next_minute(limited: tuple[AppServer, Clock]) -> None:
    """``RateLimit-Reset`` is made once a second (rate_limit.py): through a second it stays
    the same, at the next whole second it is one less, and a new minute starts at 60."""
    server, clock = limited
    start = clock.now
    with server.client(server.account()) as api:
        chat = create(api)
        resets = []
        for at in (10.2, 10.9, 11.0, 59.99, 60.0):
            clock.now = start + at
            response = api.get(f"/ai_chats/{chat['id']}")
            assert response.status_code == 200, response.text
            resets.append(limit_headers(response)[2])
    assert resets == [50, 50, 49, 1, 60]


def test_an_admitted_request_that_fails_still_says_what_is_left(limited: tuple[AppServer, Clock]) -> None:
    """A request admitted by the limit is counted whatever it answers: its error answer (a bad
    body, an unknown chat) tells the client what is left, as a success does. A request refused
    before the key is known (401) is counted against nothing, and says nothing of a limit."""
    server, clock = limited
    with server.client(server.account()) as api:
        clock.now += 1
        assert limit_headers(api.post("/ai_chats", json={"message_text": ""})) == (5, 4, 59)  # 422
        assert limit_headers(api.post("/ai_chats", content=b"{", headers={"Content-Type": "application/json"})) == (
            5,
            3,
            59,
        )  # 400, fmt: skip
        missing = api.get("/ai_chats/aich_nothing")
        assert_error(missing, 404, "not_found")
        assert limit_headers(missing) == (5, 4, 59)  # retrieve counts apart from create
        unauthenticated = api.get("/ai_chats/aich_nothing", headers={"Authorization": "Bearer wrong"})
        assert unauthenticated.status_code == 401 and "ratelimit-remaining" not in unauthenticated.headers


def test_refused_requests_change_nothing(limited: tuple[AppServer, Clock]) -> None:
    server, _ = limited
    with server.client(server.account()) as api:
        for n in range(5):
            assert api.post("/ai_chats", json={"message_text": f"chat {n}"}).status_code == 201
        assert_error(api.post("/ai_chats", json={"message_text": "one too many"}), 429, "rate_limit_exceeded")
        assert len(api.get("/ai_chats").json()["data"]) == 5


def test_the_web_session_counts_as_its_key(limited: tuple[AppServer, Clock]) -> None:
    server, _ = limited
    account = server.account()
    cookie = {"Cookie": f"aichats_session={account.key}"}  # what the browser sends once signed in
    with server.client(account) as api, httpx2.Client(base_url=server.api, transport=server.transport()) as web:
        chat = create(api)
        path = f"/ai_chats/{chat['id']}"
        for client in (api, web, api, web, api):  # 5 by the key, through either door
            response = client.get(path, headers=cookie if client is web else None)
            assert response.status_code == 200, response.text
        assert_error(web.get(path, headers=cookie), 429, "rate_limit_exceeded")
        assert_error(api.get(path), 429, "rate_limit_exceeded")


def test_without_a_limit_no_headers(database_url: str, tmp_path: Path) -> None:
    """``AICHATS_RATE_LIMIT_PER_MINUTE=0`` turns it off: no count, no headers."""
    with AppServer(database_url, tmp_path / "files", rate_limit_per_minute=0) as server:
        assert server.app.state.rate_limiter is None
        with server.client(server.account()) as api:
            response = api.get("/ai_chats")
            assert response.status_code == 200 and "ratelimit-limit" not in response.headers


# ------------------------------------------------------------------ two server processes

LIMIT = 40
PER_SERVER = 60  # each server gets more than the whole limit


def fresh_minute(margin: float = 20.0) -> None:
    """Wait for the next minute if this one has less than ``margin`` seconds left: a burst
    must fit in one minute for its count to be exact."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


async def hammer(root: str, account: Account, path: str, count: int) -> list[httpx2.Response]:
    """``count`` requests to ``path`` at once (16 connections)."""
    limits = httpx2.Limits(max_connections=16)
    async with httpx2.AsyncClient(
        base_url=root + "/api/v1", headers=account.headers, limits=limits, timeout=30
    ) as client:
        return list(await asyncio.gather(*(client.get(path) for _ in range(count))))


@pytest.fixture(scope="module")
def two_servers(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two ``aichats serve`` processes on one database, with a limit of ``LIMIT`` a minute."""
    url, directory = new_database(), tmp_path_factory.mktemp("two")
    env = {
        "AICHATS_WORKERS": "0",
        "AICHATS_RATE_LIMIT_PER_MINUTE": str(LIMIT),
        "AICHATS_AUTH_FAILURES_PER_MINUTE": NO_AUTH_LIMIT,
    }
    with serving(url, directory / "a", env) as first, serving(url, directory / "b", env) as second:
        yield first, second


def test_two_processes_share_one_exact_count(two_servers: tuple[LiveServer, LiveServer]) -> None:
    """Both servers hammered at once: exactly ``LIMIT`` requests admitted in all, the rest 429
    with their headers; the key's other operations and other keys are untouched."""
    first, second = two_servers
    account = first.account()
    with first.client(account) as api:
        chat = create(api)
    fresh_minute()

    async def both() -> list[httpx2.Response]:
        path = f"/ai_chats/{chat['id']}"
        a, b = await asyncio.gather(
            hammer(first.root, account, path, PER_SERVER), hammer(second.root, account, path, PER_SERVER)
        )
        return a + b

    answers = asyncio.run(both())
    statuses = Counter(response.status_code for response in answers)
    assert statuses == {200: LIMIT, 429: 2 * PER_SERVER - LIMIT}, statuses
    for response in answers:
        assert response.headers["ratelimit-limit"] == str(LIMIT)
        reset = int(response.headers["ratelimit-reset"])
        assert 1 <= reset <= 60
        if response.status_code == 429:
            assert_error(response, 429, "rate_limit_exceeded", "Try again in")
            assert response.headers["retry-after"] == str(reset) and response.headers["ratelimit-remaining"] == "0"
    # Both processes admitted some (the count is shared, not split in two halves by chance).
    assert all(any(r.status_code == 200 for r in answers[i : i + PER_SERVER]) for i in (0, PER_SERVER))
    with second.client(account) as api:
        assert api.get("/ai_chats").status_code == 200  # another operation
    with second.client(second.account()) as other:
        assert other.get("/ai_chats").status_code == 200  # another key
