"""Token budgets and the schedules' cap over HTTP: a real server whose replies use tokens,
``GET /usage``, new turns refused with 429 once the day's budget is used (and allowed again
by the CLI's override, in the running server), and a race-safe cap on active schedules."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from aichats.api.operations import Operation
from aichats.api.registry import OPERATIONS
from aichats.api.schemas import UsageSummary
from aichats.clock import isoformat_ms
from aichats.services import budgets
from aichats.services.budgets import DAY_MS
from aichats.storage import database
from tests.conftest import NO_AUTH_LIMIT
from tests.support.api import assert_error, create
from tests.support.databases import fresh_database
from tests.support.servers import AppServer, LiveServer, serving
from tests.support.waiting import wait_for

BUDGET = 10  # tokens a day: test:echo's first reply uses more
WEEKLY = {"prompt": "Weekly report", "timezone": "UTC", "cron": "0 9 * * 1"}


@pytest.fixture(scope="module")
def budget_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"AICHATS_MODEL": "test:echo", "AICHATS_WORKERS": "1", "AICHATS_TOKEN_BUDGET_PER_DAY": str(BUDGET)}
    with serving(new_database(), tmp_path_factory.mktemp("budgets"), env) as server:
        yield server


def usage(api: httpx2.Client) -> dict:
    response = api.get("/usage")
    assert response.status_code == 200, response.text
    assert int(response.headers["ratelimit-limit"]) == 600  # the default limit is on
    return UsageSummary.model_validate(response.json()).model_dump(mode="json")


def answered(api: httpx2.Client, chat_id: str) -> list[dict]:
    def done() -> list[dict] | None:
        messages = api.get(f"/ai_chats/{chat_id}/messages").json()["data"]
        return messages if messages[-1]["status"] == "completed" else None

    return wait_for(done, what="the reply")


def test_turns_are_refused_once_the_day_s_budget_is_used(
    budget_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICHATS_TOKEN_BUDGET_PER_DAY", str(BUDGET))  # the CLI's environment, as the server's
    account = budget_server.account()
    with budget_server.client(account) as api:
        midnight = isoformat_ms((int(time.time() * 1000) // DAY_MS + 1) * DAY_MS)
        fresh = usage(api)
        assert fresh["blended_tokens"] == "0" and fresh["token_budget"] == str(BUDGET)
        assert fresh["remaining_tokens"] == str(BUDGET) and fresh["resets_at"] == midnight

        chat = create(api, message_text="How much did we sell?")
        reply = answered(api, chat["id"])[-1]
        spent = reply["usage"]["blended_tokens"]
        assert int(spent) > BUDGET
        after = usage(api)
        assert after["blended_tokens"] == spent and after["remaining_tokens"] == "0"
        assert api.get(f"/ai_chats/{chat['id']}").json()["blended_token_usage"] == spent

        refused = api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "And last week?"})
        assert_error(refused, 429, "token_budget_exceeded", f"It resets at {midnight}")
        seconds_left = (DAY_MS - int(time.time() * 1000) % DAY_MS) / 1000
        assert abs(int(refused.headers["retry-after"]) - math.ceil(seconds_left)) <= 2
        assert_error(api.post("/ai_chats", json={"message_text": "A new chat"}), 429, "token_budget_exceeded")
        retried = api.post(f"/ai_chats/{chat['id']}/messages/{reply['id']}/retry")  # Regenerate
        assert_error(retried, 429, "token_budget_exceeded")
        assert api.put(f"/ai_chats/{chat['id']}/schedule", json=WEEKLY).status_code == 200  # not a turn
        assert_error(api.post(f"/ai_chats/{chat['id']}/schedule/run"), 429, "token_budget_exceeded")
        # Nothing was stored by the refused calls; reading goes on.
        assert len(api.get("/ai_chats").json()["data"]) == 1
        assert api.get(f"/ai_chats/{chat['id']}").json()["message_count"] == 2

        # The operator lifts the user's limit: the running server applies it at the next turn.
        shown = budget_server.cli("users", "budget", account.user_id, "--unlimited").stdout
        assert "no limit (its own)" in shown and f"used today (UTC): {spent}" in shown
        posted = wait_for(
            lambda: (
                (r := api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "More"})).status_code == 201
                and r
            ),
            what="the override to apply",
        )
        assert posted.json()["content"] == "More"
        assert usage(api)["token_budget"] is None and usage(api)["remaining_tokens"] is None
        answered(api, chat["id"])

        # Back to the default: refused again.
        shown = budget_server.cli("users", "budget", account.user_id, "--default").stdout
        assert f"{BUDGET} blended tokens a day (the default" in shown and "(over budget)" in shown
        wait_for(
            lambda: api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "x"}).status_code == 429,
            what="the default to apply again",
        )
        budget_server.cli("users", "budget", account.user_id, "--tokens", "1000000")
        wait_for(lambda: usage(api)["token_budget"] == "1000000")
        assert api.post("/ai_chats", json={"message_text": "Within budget"}).status_code == 201


def test_the_cli_refuses_two_choices_and_unknown_users(
    budget_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICHATS_TOKEN_BUDGET_PER_DAY", str(BUDGET))
    account = budget_server.account()
    both = budget_server.cli("users", "budget", account.user_id, "--tokens", "5", "--unlimited", check=False)
    assert both.returncode != 0 and "one of --tokens N, --unlimited or --default" in both.stderr
    negative = budget_server.cli("users", "budget", account.user_id, "--tokens", "-1", check=False)
    assert negative.returncode != 0
    unknown = budget_server.cli("users", "budget", "user_nobody", "--tokens", "5", check=False)
    assert unknown.returncode != 0 and "no user user_nobody" in unknown.stderr
    shown = budget_server.cli("users", "budget", account.user_id).stdout
    assert f"{BUDGET} blended tokens a day (the default" in shown and "used today (UTC): 0" in shown


# ------------------------------------------------------------------ the schedules' cap

CAP = 2


@pytest.fixture
def capped(database_url: str, tmp_path: Path) -> Iterator[AppServer]:
    """No workers (no replies, no usage): the cap alone."""
    with AppServer(
        database_url, tmp_path / "files", auth_failures_per_minute=int(NO_AUTH_LIMIT), max_schedules_per_user=CAP
    ) as server:
        yield server


def test_active_schedules_are_capped_and_nothing_is_stored_past_the_cap(capped: AppServer) -> None:
    with capped.client(capped.account()) as api:
        chats = [create(api)["id"] for _ in range(4)]
        for chat in chats[:CAP]:
            assert api.put(f"/ai_chats/{chat}/schedule", json=WEEKLY).status_code == 200
        refused = api.put(f"/ai_chats/{chats[2]}/schedule", json=WEEKLY)
        assert_error(refused, 409, "schedule_limit_exceeded", f"the most this service allows ({CAP})")
        assert_error(api.get(f"/ai_chats/{chats[2]}/schedule"), 404, "not_found")  # nothing stored
        assert api.get("/ai_chats", params={"only_active_crons": "true"}).json()["data"].__len__() == CAP
        # Replacing an active schedule adds none; a paused one does not count.
        assert api.put(f"/ai_chats/{chats[0]}/schedule", json={**WEEKLY, "prompt": "Changed"}).status_code == 200
        assert api.put(f"/ai_chats/{chats[3]}/schedule", json={**WEEKLY, "active": False}).status_code == 200
        assert api.put(f"/ai_chats/{chats[0]}/schedule", json={**WEEKLY, "active": False}).status_code == 200
        assert api.put(f"/ai_chats/{chats[2]}/schedule", json=WEEKLY).status_code == 200
        assert_error(api.put(f"/ai_chats/{chats[3]}/schedule", json=WEEKLY), 409, "schedule_limit_exceeded")
        shown = api.get("/usage").json()
        assert (shown["active_schedules"], shown["max_active_schedules"]) == (CAP, CAP)
        # Each user has their own cap.
        with capped.client(capped.account()) as other:
            assert other.put(f"/ai_chats/{create(other)['id']}/schedule", json=WEEKLY).status_code == 200


def test_the_cap_holds_under_concurrent_saves(capped: AppServer) -> None:
    """Eight schedules saved at once for eight chats: exactly the cap's worth is stored (each
    save counts the user's others while holding the user's row)."""
    with capped.client(capped.account()) as api:
        chats = [create(api)["id"] for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda c: api.put(f"/ai_chats/{c}/schedule", json=WEEKLY).status_code, chats))
        assert sorted(statuses) == [200] * CAP + [409] * (8 - CAP)
        stored = [c for c in chats if api.get(f"/ai_chats/{c}/schedule").status_code == 200]
        assert len(stored) == CAP


# ------------------------------------------------------------------ which calls are turns

TURNS = [op for op in OPERATIONS if op.turn]


def test_the_turns_are_the_calls_that_queue_one() -> None:
    assert sorted(op.operation_id for op in TURNS) == [
        "createAiChat",
        "createMessage",
        "retryMessage",
        "runScheduleNow",
    ]


@pytest.fixture
def nothing_allowed(database_url: str, tmp_path: Path) -> Iterator[AppServer]:
    """A budget of 0 tokens a day: every user is over it from the start."""
    with AppServer(
        database_url, tmp_path / "files", auth_failures_per_minute=int(NO_AUTH_LIMIT), token_budget_per_day=0
    ) as server:
        yield server


@pytest.mark.parametrize("op", TURNS, ids=lambda op: op.operation_id)
def test_every_turn_checks_the_budget(nothing_allowed: AppServer, op: Operation) -> None:
    """Each operation declared as a turn refuses, before it looks at what it names; the
    others answer as usual."""
    with nothing_allowed.client(nothing_allowed.account()) as api:
        body = {"message_text": "hi"} if op.body is not None else None
        response = api.request(op.method, re.sub(r"\{\w+\}", "x_1", op.path), json=body)
        assert_error(response, 429, "token_budget_exceeded", "The daily token budget of 0 blended tokens")
        assert api.get("/ai_chats").status_code == 200
        assert api.get("/usage").json()["remaining_tokens"] == "0"


def test_a_repeated_create_replays_its_answer_even_over_budget(app_server: AppServer) -> None:
    """The budget is checked when a create would create: its repetition (same
    ``Idempotency-Key``) still answers as the first did."""
    account = app_server.account()
    with app_server.client(account) as api:
        first = api.post("/ai_chats", json={"message_text": "hi"}, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 201
        app_server.portal.call(_set_budget, app_server.database_url, account.user_id, 0)
        probe = "/ai_chats/aich_none/messages"  # a turn that stores nothing: 404 under budget, 429 over it
        wait_for(lambda: api.post(probe, json={"message_text": "x"}).status_code == 429, what="the budget")
        again = api.post("/ai_chats", json={"message_text": "hi"}, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        other = api.post("/ai_chats", json={"message_text": "hi"}, headers={"Idempotency-Key": "k2"})
        assert_error(other, 429, "token_budget_exceeded")
        assert len(api.get("/ai_chats").json()["data"]) == 1


async def _set_budget(database_url: str, user_id: str, tokens: int) -> None:
    """As ``aichats users budget`` does, from a connection of its own."""
    db = await database.connect(database_url, pool_size=1)
    try:
        await budgets.set_budget(db, user_id, tokens)
    finally:
        await db.close()


def test_idempotent_creates_at_once_with_a_budget_never_starve_the_pool(tmp_path: Path) -> None:
    """A create with an ``Idempotency-Key`` checks the budget inside its transaction: on a
    second connection, as many such creates at once as the pool has connections each held one
    and waited for another, for ever (a pool of 1: the first create alone hung)."""
    settings = {"postgres_pool_size": 1, "token_budget_per_day": 1_000_000, "auth_failures_per_minute": 10_000}
    with fresh_database("postgresql", tmp_path) as url, AppServer(url, tmp_path / "files", **settings) as server:
        account = server.account()

        def create(n: int) -> int:
            with server.client(account) as api:
                answer = api.post("/ai_chats", json={"message_text": "hi"}, headers={"Idempotency-Key": f"k-{n}"})
                return answer.status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(create, range(4))) == [201] * 4
