"""Logs (issue 13, item 5): ``AICHATS_LOG_FORMAT=json`` makes every line one JSON object,
with the request id of the request being served (the 500 handler's line included) and
the run id of the turn being run; text lines carry the same ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx2

from aichats.observability import logs
from aichats.observability.logs import ContextIds, JsonFormatter
from tests.e2e_agent.support import closed_port
from tests.support.accounts import make_account
from tests.support.api import create
from tests.support.databases import execute
from tests.support.servers import log_of, serving
from tests.support.waiting import wait_for


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    made = logging.LogRecord("aichats.runs", logging.WARNING, __file__, 1, message, args, exc_info)
    ContextIds().filter(made)
    return made


def test_a_json_line_is_one_valid_object_with_the_ids() -> None:
    request_token, run_token = logs.request_id.set("req-1"), logs.run_id.set("run_abc")
    try:
        try:
            raise ValueError("broken\nacross lines")
        except ValueError as error:
            line = JsonFormatter().format(record("run %s: %s", "run_abc", 'quote " and\nnewline', exc=error))
    finally:
        logs.request_id.reset(request_token)
        logs.run_id.reset(run_token)
    assert "\n" not in line  # one line per event, whatever the message and traceback hold
    event = json.loads(line)
    assert event["message"] == 'run run_abc: quote " and\nnewline'
    assert event["level"] == "warning" and event["logger"] == "aichats.runs"
    assert event["request_id"] == "req-1" and event["run_id"] == "run_abc"
    assert event["time"].endswith("Z") and len(event["time"]) == len("2026-12-07T09:30:00.123Z")
    assert "ValueError: broken" in event["exception"] and isinstance(event["pid"], int)


def test_lines_outside_a_request_or_run_have_no_ids() -> None:
    event = json.loads(JsonFormatter().format(record("scheduling pass failed")))
    assert "request_id" not in event and "run_id" not in event
    text = logging.Formatter(logs.TEXT_FORMAT).format(record("plain"))
    assert text.endswith("aichats.runs: plain")


def test_text_lines_carry_the_ids() -> None:
    token = logs.request_id.set("req-2")
    try:
        text = logging.Formatter(logs.TEXT_FORMAT).format(record("unhandled error"))
    finally:
        logs.request_id.reset(token)
    assert text.endswith("aichats.runs: unhandled error [request_id=req-2]")


def test_run_context_names_the_run_for_a_task_only() -> None:
    context = logs.run_context("run_xyz")
    assert context.run(logs.run_id.get) == "run_xyz"
    assert logs.run_id.get() is None  # the creator's own context is unchanged


def json_lines(path: Path | None) -> list[dict[str, Any]]:
    """Every line of a JSON-format log; each must be a JSON object."""
    assert path is not None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return events


def test_a_server_error_logs_its_request_id_as_json(database_url: str, tmp_path: Path) -> None:
    with serving(database_url, tmp_path, {"AICHATS_WORKERS": "0", "AICHATS_LOG_FORMAT": "json"}) as server:
        account = make_account(database_url)
        # Break the database under the running server: listing chats now fails inside.
        execute(database_url, "ALTER TABLE ai_chats RENAME TO ai_chats_gone")
        headers = {**account.headers, "X-Request-Id": "req-500-test"}
        answer = httpx2.get(server.api + "/ai_chats", headers=headers)
        assert answer.status_code == 500 and answer.headers["x-request-id"] == "req-500-test"
        events = wait_for(
            lambda: [e for e in json_lines(server.log_path) if e.get("request_id") == "req-500-test"] or None,
            10,
            "the error's log line",
        )
    (event,) = events
    assert event["message"] == "unhandled error on GET /api/v1/ai_chats" and event["level"] == "error"
    assert event["logger"] == "aichats.api" and "Traceback" in event["exception"]
    everything = json_lines(server.log_path)  # uvicorn's own lines, and the start-up summary, too
    assert any(e["logger"].startswith("uvicorn") for e in everything)
    assert any("database:" in e["message"] for e in everything)


def test_a_turn_logs_its_run_id(database_url: str, tmp_path: Path) -> None:
    """A model that refuses connections: the turn retries, logging each try with its run's id."""
    env = {
        "AICHATS_LOG_FORMAT": "json",
        "AICHATS_MODEL": "openai:nothing",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "AICHATS_MODEL_TIMEOUT_SECONDS": "2",
    }
    with serving(database_url, tmp_path, env) as server:
        account = make_account(database_url)
        with httpx2.Client(base_url=server.api, headers=account.headers, timeout=10) as api:
            chat = create(api)

            def run_id() -> str | None:
                runs = api.get(f"/ai_chats/{chat['id']}/runs").json()["data"]
                return runs[0]["id"] if runs and runs[0]["status"] == "failed" else None

            run = wait_for(run_id, 30, "the run to fail")
        lines = [e for e in json_lines(server.log_path) if e.get("run_id") == run]
        assert any("retrying" in e["message"] for e in lines), log_of(server)
        assert all(e["logger"].startswith("aichats") for e in lines)
