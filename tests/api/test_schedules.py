"""The schedule API and `aichats scheduler tick` over real processes."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx

from aichats.api.schemas import RunList, Schedule
from tests.api.test_ai_chats import assert_error, create
from tests.conftest import AICHATS, LiveServer

WEEKLY = {"prompt": "Weekly revenue analysis for {{date}}", "timezone": "America/New_York", "cron": "0 9 * * 1"}


def test_schedule_lifecycle(api: httpx.Client) -> None:
    chat = create(api, title="Weekly Revenue Analysis")
    path = f"/ai_chats/{chat['id']}/schedule"
    assert_error(api.get(path), 404, "not_found", "no schedule")
    body = Schedule.model_validate(api.put(path, json=WEEKLY).json()).model_dump(mode="json")
    assert body["description"] == "At 09:00, only on Monday (America/New_York)"
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


def test_invalid_schedules_are_422(live_server: LiveServer, api: httpx.Client) -> None:
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
    with live_server.client(live_server.account()) as other:
        assert_error(other.put(path, json=WEEKLY), 404, "not_found")


def test_concurrent_ticks_fire_each_instant_once(live_server: LiveServer, api: httpx.Client) -> None:
    chat = create(api)
    schedule = api.put(f"/ai_chats/{chat['id']}/schedule", json={**WEEKLY, "cron": "*/5 * * * *"}).json()
    at = schedule["next_run_at"]
    env = {"AICHATS_DATABASE_URL": live_server.database_url}

    def tick(_: int) -> subprocess.CompletedProcess[str]:
        command = [AICHATS, "scheduler", "tick", "--at", at]
        return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(tick, range(3)))
    assert all(r.returncode == 0 and r.stdout.startswith("fired") for r in results), results
    runs = [r for r in api.get(f"/ai_chats/{chat['id']}/runs").json()["data"] if r["trigger"] == "schedule"]
    assert [r["scheduled_for"] for r in runs] == [at]
