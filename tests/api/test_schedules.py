"""The schedule API and `aichats scheduler tick` (a real process).

No call here streams: each test has the app in this process, on a database of its own
(``app_server``), which the ``aichats`` commands the tests run share."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
import sqlalchemy as sa

from aichats.api.schemas import RunList, Schedule, SchedulePreview
from aichats.clock import isoformat_ms, parse_iso
from aichats.services import chats, schedules, users
from aichats.services.messages import NewMessage, create_chat
from aichats.storage import database, migrate
from aichats.storage.schema import ai_chats
from tests.support.accounts import Account
from tests.support.api import assert_error, create
from tests.support.servers import AICHATS, AppServer, Server, run_cli

README = Path(__file__).parents[2] / "README.md"


@pytest.fixture
def server(app_server: AppServer) -> Server:
    return app_server


WEEKLY = {"prompt": "Weekly revenue analysis for {{date}}", "timezone": "America/New_York", "cron": "0 9 * * 1"}


def test_schedule_lifecycle(api: httpx2.Client) -> None:
    chat = create(api, title="Weekly Revenue Analysis")
    path = f"/ai_chats/{chat['id']}/schedule"
    assert_error(api.get(path), 404, "not_found", "no schedule")
    body = Schedule.model_validate(api.put(path, json=WEEKLY).json()).model_dump(mode="json")
    assert body["description"] == "At 09:00 on Monday (America/New_York)"
    assert body["active"] is True and len(body["next_run_times"]) == 5
    assert body["next_run_at"] == body["next_run_times"][0] and body["consecutive_failures"] == 0
    assert api.get(path).json() == body
    assert [c["id"] for c in api.get("/ai_chats", params={"only_active_crons": "true"}).json()["data"]] == [chat["id"]]

    paused = api.put(path, json={**WEEKLY, "active": False}).json()
    assert paused["active"] is False and paused["next_run_times"] == []
    assert api.get("/ai_chats", params={"only_active_crons": "true"}).json()["data"] == []

    run = api.post(f"{path}/run")
    assert run.status_code == 201 and run.json()["trigger"] == "manual" and run.json()["status"] == "queued"
    runs = RunList.model_validate(api.get(f"/ai_chats/{chat['id']}/runs").json()).model_dump(mode="json")["data"]
    assert [r["trigger"] for r in runs] == ["manual", "message"]  # newest first
    messages = api.get(f"/ai_chats/{chat['id']}/messages").json()["data"]
    assert messages[-2]["source"] == "schedule" and messages[-2]["content"].startswith("Weekly revenue analysis for 20")

    assert api.delete(path).content == b"true"
    assert_error(api.get(path), 404, "not_found")


def test_invalid_schedules_are_422(server: Server, api: httpx2.Client) -> None:
    chat = create(api)
    path = f"/ai_chats/{chat['id']}/schedule"
    for body, says in [
        ({**WEEKLY, "cron": "0 25 * * *"}, "cron"),
        ({**WEEKLY, "timezone": "Nowhere/City"}, "timezone"),
        ({"prompt": "p", "timezone": "UTC", "interval_seconds": 5}, "at least"),
        ({"prompt": "p", "timezone": "UTC", "run_at": "2001-01-01T00:00:00Z"}, "past"),
        ({"prompt": "p", "timezone": "UTC"}, "exactly one"),
    ]:
        assert_error(api.put(path, json=body), 422, "invalid_request", says)
    assert_error(api.get(path), 404, "not_found")
    with server.client(server.account()) as other:
        assert_error(other.put(path, json=WEEKLY), 404, "not_found")


def test_concurrent_ticks_fire_each_instant_once(server: Server, api: httpx2.Client) -> None:
    chat = create(api)
    schedule = api.put(f"/ai_chats/{chat['id']}/schedule", json={**WEEKLY, "cron": "*/5 * * * *"}).json()
    at = schedule["next_run_at"]
    env = {"AICHATS_DATABASE_URL": server.database_url}

    def tick(_: int) -> subprocess.CompletedProcess[str]:
        command = [AICHATS, "scheduler", "tick", "--at", at]
        return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(tick, range(3)))
    assert all(r.returncode == 0 and r.stdout.startswith("fired") for r in results), results
    runs = [r for r in api.get(f"/ai_chats/{chat['id']}/runs").json()["data"] if r["trigger"] == "schedule"]
    assert [r["scheduled_for"] for r in runs] == [at]


def test_schedule_preview(server: Server, api: httpx2.Client) -> None:
    response = api.post("/schedule_preview", json=WEEKLY)
    assert response.status_code == 200, response.text
    preview = SchedulePreview.model_validate(response.json()).model_dump(mode="json")
    assert preview["description"] == "At 09:00 on Monday (America/New_York)"
    assert preview["timezone"] == "America/New_York" and len(preview["next_run_times"]) == 5
    assert preview["next_run_times"] == sorted(preview["next_run_times"])
    # The same times as the schedule it previews, once saved.
    chat = create(api)
    saved = api.put(f"/ai_chats/{chat['id']}/schedule", json=WEEKLY).json()
    assert preview["next_run_times"] == saved["next_run_times"] and preview["description"] == saved["description"]

    hourly = api.post("/schedule_preview", json={"timezone": "UTC", "interval_seconds": 3600}).json()
    assert hourly["description"] == "Every 1:00:00 (h:mm:ss)" and len(hourly["next_run_times"]) == 5
    once = api.post("/schedule_preview", json={"timezone": "Europe/Paris", "run_at": "2999-01-01T09:00:00Z"}).json()
    assert once == {
        "description": "Once, at 2999-01-01T09:00:00.000Z",
        "next_run_times": ["2999-01-01T09:00:00.000Z"],
        "timezone": "Europe/Paris",
    }
    paused = api.post("/schedule_preview", json={**WEEKLY, "active": False}).json()
    assert paused["next_run_times"] == [] and paused["description"] == preview["description"]

    with server.client(server.account(scopes="ai_chat:read")) as reader:
        assert reader.post("/schedule_preview", json=WEEKLY).status_code == 200
    active = api.get("/ai_chats", params={"only_active_crons": "true"}).json()["data"]
    assert [c["id"] for c in active] == [chat["id"]]  # previews saved nothing


def test_invalid_previews_are_refused_like_schedules(api: httpx2.Client) -> None:
    chat = create(api)
    for body in [
        {**WEEKLY, "cron": "0 25 * * *"},
        {**WEEKLY, "timezone": "Nowhere/City"},
        {"prompt": "p", "timezone": "UTC", "interval_seconds": 5},
        {"prompt": "p", "timezone": "UTC", "run_at": "2001-01-01T00:00:00Z"},
        {"prompt": "p", "timezone": "UTC", "run_at": "tomorrow"},
        {"prompt": "p", "timezone": "UTC"},
        {"prompt": "   ", "timezone": "UTC", "cron": "0 9 * * 1"},
        {"prompt": "p", "timezone": "UTC", "cron": "0 9 * * 1", "unknown": 1},
    ]:
        saved = api.put(f"/ai_chats/{chat['id']}/schedule", json=body)
        previewed = api.post("/schedule_preview", json=body)
        assert_error(previewed, 422, "invalid_request")
        assert previewed.json() == saved.json(), body
    assert_error(api.post("/schedule_preview", json={"prompt": "p"}), 422, "invalid_request", "timezone")
    assert_error(api.post("/schedule_preview", content=b"[]"), 400, "bad_request")


def test_huge_numbers_are_422_and_change_nothing(api: httpx2.Client) -> None:
    chat = create(api)
    path = f"/ai_chats/{chat['id']}/schedule"
    saved = api.put(path, json=WEEKLY).json()
    hourly = {"prompt": "p", "timezone": "UTC", "interval_seconds": 3600}
    for body, says in [
        ({**hourly, "interval_seconds": 10**15}, "interval_seconds"),
        ({**hourly, "interval_seconds": 2**31}, "interval_seconds"),
        ({**hourly, "interval_seconds": 2**63}, "interval_seconds"),
        ({**hourly, "interval_seconds": 31_622_401}, "interval_seconds"),
        ({"prompt": "p", "timezone": "UTC", "run_at": "9999-12-31T23:00:00-05:00"}, "9999"),  # year 10000 in UTC
    ]:
        assert_error(api.put(path, json=body), 422, "invalid_request", says)
        assert_error(api.post("/schedule_preview", json=body), 422, "invalid_request", says)
    assert api.get(path).status_code == 200 and api.get(path).json() == saved  # nothing was saved
    longest = api.put(path, json={**hourly, "interval_seconds": 31_622_400})  # 366 days is the longest interval
    assert longest.status_code == 200, longest.text
    last = api.put(path, json={"prompt": "p", "timezone": "UTC", "run_at": "9999-12-31T23:59:59.999Z"})
    assert last.status_code == 200 and last.json()["next_run_times"] == ["9999-12-31T23:59:59.999Z"]


def test_concurrent_puts_all_answer_200_and_leave_one_schedule(server: Server, account: Account) -> None:
    def put(n: int) -> httpx2.Response:
        with server.client(account) as client:
            return client.put(path, json={**WEEKLY, "prompt": f"prompt {n}"})

    with server.client(account) as api:
        for _ in range(5):  # 1 in 8 simultaneous PUTs used to fail on PostgreSQL
            chat = create(api)
            path = f"/ai_chats/{chat['id']}/schedule"
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(put, range(8)))
            assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers if r.status_code != 200]
            stored = api.get(path).json()
            assert stored["prompt"] in {r.json()["prompt"] for r in answers}
            listed = api.get("/ai_chats", params={"only_active_crons": "true"}).json()["data"]
            assert chat["id"] in [c["id"] for c in listed]


def test_run_now_returns_the_run_it_queued(server: Server, account: Account) -> None:
    with server.client(account) as api:
        chat = create(api)
        path = f"/ai_chats/{chat['id']}/schedule"
        api.put(path, json=WEEKLY)

    def run(n: int) -> httpx2.Response:
        with server.client(account) as client:
            if n % 2:  # a message queues a run of its own in between
                return client.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "hi"})
            return client.post(f"{path}/run")

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(run, range(96)))
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    assert {r.json()["trigger"] for n, r in enumerate(answers) if n % 2 == 0} == {"manual"}
    returned = [r.json()["id"] for n, r in enumerate(answers) if n % 2 == 0]
    with server.client(account) as api:
        manual = [r["id"] for r in api.get(f"/ai_chats/{chat['id']}/runs", params={"first": 100}).json()["data"]
                  if r["trigger"] == "manual"]  # fmt: skip
    assert sorted(returned) == sorted(manual)  # each answer is its own run, none another's


def test_the_readme_tick_fires_on_any_day_and_tick_says_when_next(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'readme.db'}"
    migrate.upgrade(url)

    async def readme_schedule() -> int:  # the README's PUT, made with the services
        db = await database.connect(url, pool_size=1)
        try:
            user_id = await users.create_user(db)
            async with db.transaction() as tx:
                chat = await create_chat(tx, user_id, chats.NewChat(NewMessage("setup")))
            data = schedules.ScheduleSpec(prompt="Weekly revenue analysis for {{date}}", cron="0 9 * * 1",
                                          timezone="Europe/Paris")  # fmt: skip
            return (await schedules.put_schedule(db, chat["pk"], data, min_interval_seconds=60))["next_run_at"]
        finally:
            await db.close()

    assert run_cli(url, "scheduler", "tick").stdout.strip() == "fired 0 (no active schedule)"
    due = isoformat_ms(asyncio.run(readme_schedule()))
    line = next(line for line in README.read_text().splitlines() if "aichats scheduler tick" in line)
    readme_args = shlex.split(line.split("#")[0])[1:]
    assert run_cli(url, *readme_args).stdout.strip() == f"fired 1 as of {due}"
    following = asyncio.run(_next_run_at(url))
    said = f"fired 0 (next schedule due at {isoformat_ms(following)})"
    assert run_cli(url, "scheduler", "tick").stdout.strip() == said  # nothing due now: says when
    assert run_cli(url, "scheduler", "tick", "--at", "2026-11-30T08:00:30Z").stdout.strip() == said
    assert run_cli(url, "scheduler", "tick", "--next", "--at", due, check=False).returncode == 2


async def _next_run_at(url: str) -> int:
    db = await database.connect(url, pool_size=1)
    try:
        return await schedules.next_due(db)  # type: ignore[return-value]
    finally:
        await db.close()


def test_a_schedule_that_cannot_be_computed_is_quarantined_and_shown(server: Server, api: httpx2.Client) -> None:
    healthy, broken = create(api), create(api, title="Broken")
    at = api.put(f"/ai_chats/{healthy['id']}/schedule", json={**WEEKLY, "cron": "*/5 * * * *"}).json()["next_run_at"]
    path = f"/ai_chats/{broken['id']}/schedule"
    api.put(path, json=WEEKLY)

    async def corrupt() -> None:  # as old data could be: a cron today's checks refuse, first in line
        db = await database.connect(server.database_url, pool_size=1)
        chat_pk = sa.select(ai_chats.c.pk).where(ai_chats.c.id == broken["id"]).scalar_subquery()
        try:
            async with db.transaction() as tx:
                await tx.execute(
                    sa.update(schedules.schedules)
                    .where(schedules.schedules.c.chat_pk == chat_pk)
                    .values(cron="every day", next_run_at=parse_iso(at) - 60_000)
                )
        finally:
            await db.close()

    asyncio.run(corrupt())
    shown = api.get(path)
    assert shown.status_code == 200 and shown.json()["description"].startswith("Cannot be computed"), shown.text
    assert server.cli("scheduler", "tick", "--at", at).stdout.startswith("fired ")
    fired = [r["scheduled_for"] for r in api.get(f"/ai_chats/{healthy['id']}/runs").json()["data"]]
    assert at in fired  # the healthy schedule fired, though the broken one was due first
    body = Schedule.model_validate(api.get(path).json()).model_dump(mode="json")
    assert body["active"] is False and body["next_run_at"] is None and "CronSimError" in (body["last_error"] or "")
    notes = api.get("/notifications").json()["data"]
    assert [(n["kind"], n["ai_chat_id"]) for n in notes] == [("ai_chat.schedule.deactivated", broken["id"])]
    assert body["last_error"] in notes[0]["body"]
    again = api.put(path, json=WEEKLY).json()
    assert again["active"] is True and again["last_error"] is None
