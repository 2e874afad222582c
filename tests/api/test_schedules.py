"""The schedule API and `aichats scheduler tick` over real processes."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx2

from aichats.api.schemas import RunList, Schedule, SchedulePreview
from tests.api.test_ai_chats import assert_error, create
from tests.conftest import AICHATS, LiveServer

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


def test_invalid_schedules_are_422(live_server: LiveServer, api: httpx2.Client) -> None:
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


def test_concurrent_ticks_fire_each_instant_once(live_server: LiveServer, api: httpx2.Client) -> None:
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


def test_schedule_preview(live_server: LiveServer, api: httpx2.Client) -> None:
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

    with live_server.client(live_server.account(scopes="ai_chat:read")) as reader:
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
