"""The agent acts: tools in chats and in scheduled runs, end to end (docs/tools.md).

A real ``aichats serve`` answers with ``test:tools``, the deterministic model that calls
every offered tool named in the user's text (arguments: the text's first JSON object) and,
given the results, answers ``<tool> said: <result>``. A real MCP server (the SDK's, on
loopback) holds the user's tools. Both databases.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from aichats.storage import database
from tests.e2e_agent.support import chat_of, create_chat, messages_of, post_message
from tests.support.accounts import Account
from tests.support.mcp_server import ROOT, McpProcess, command, serving_mcp
from tests.support.servers import LiveServer, log_of, serving
from tests.support.sse import read_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

STDIO = command("--transport", "stdio")
# The operator's server, every user's: the same test server, over stdio.
OPERATOR_SERVER = {"name": "ops", "command": STDIO[0], "args": STDIO[1:], "env": {"PYTHONPATH": str(ROOT)}}
FIGURE = "48,210 EUR"  # what weekly_revenue answers for 2026-W49
ASK_REVENUE = 'revenue__weekly_revenue {"week": "2026-W49"}'


@pytest.fixture(scope="module")
def mcp() -> Iterator[McpProcess]:
    with serving_mcp() as server:
        yield server


@pytest.fixture(scope="module")
def tools_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "AICHATS_MODEL": "test:tools",
        "AICHATS_WORKERS": "3",
        "AICHATS_TOOLS_ALLOW_PRIVATE_URLS": "true",  # the MCP server is on loopback
        "AICHATS_TOOL_TIMEOUT_SECONDS": "10",
        "AICHATS_RUN_LEASE_SECONDS": "3",
        "AICHATS_TOOL_SERVERS": json.dumps([OPERATOR_SERVER]),
    }
    with serving(new_database(), tmp_path_factory.mktemp("tools-server"), env) as server:
        yield server


@pytest.fixture
def account(tools_server: LiveServer) -> Account:
    return tools_server.account()


@pytest.fixture
def api(tools_server: LiveServer, account: Account) -> Iterator[httpx2.Client]:
    with tools_server.client(account) as client:
        yield client


def register(api: httpx2.Client, mcp: McpProcess, name: str = "revenue") -> dict[str, Any]:
    answer = api.post("/tool_servers", json={"name": name, "url": mcp.url})
    assert answer.status_code == 201, answer.text
    return answer.json()


def last_reply(api: httpx2.Client, chat_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
    """The chat's last message once it is a reply in one of ``statuses``."""

    def reached() -> dict[str, Any] | None:
        last = messages_of(api, chat_id)[-1]
        return last if last["role"] == "assistant" and last["status"] in statuses else None

    return wait_for(reached, timeout, f"a reply {'/'.join(statuses)} in {chat_id}")


async def rows(database_url: str, sql: str) -> list[Any]:
    db = await database.connect(database_url, pool_size=1)
    try:
        return await db.fetch_all(sa.text(sql))
    finally:
        await db.close()


def reply_number(api: httpx2.Client, chat_id: str, count: int) -> dict[str, Any]:
    """The chat's last message once the chat has ``count`` messages and that one has ended."""

    def reached() -> dict[str, Any] | None:
        found = messages_of(api, chat_id)
        ended = len(found) == count and found[-1]["status"] in ("completed", "failed")
        return found[-1] if ended else None

    return wait_for(reached, 30, f"message {count} of {chat_id} to end")


def test_a_registered_servers_tool_gives_the_reply_its_figure(
    api: httpx2.Client, mcp: McpProcess, tools_server: LiveServer
) -> None:
    server = register(api, mcp)
    assert "weekly_revenue" in {tool["name"] for tool in server["tools"]}
    chat = create_chat(api, f"What was revenue last week? {ASK_REVENUE}")
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert reply["status"] == "completed", (reply, log_of(tools_server))
    assert FIGURE in reply["content"]
    [call] = reply["tool_calls"]
    assert call["name"] == "revenue__weekly_revenue"
    assert call["server"] == {"id": server["id"], "name": "revenue"}
    assert json.loads(call["arguments"]) == {"week": "2026-W49"}
    assert call["status"] == "completed" and not call["is_error"] and FIGURE in call["result"]
    assert call["duration_ms"] is not None and call["started_at"] <= call["finished_at"]
    # The stream told of the call as it started and as it ended, before the reply completed.
    seen = read_events(api, chat["id"], until=lambda event: event.type == "message.completed")
    told = [(event.type, event.data["tool_call"]) for event in seen if event.type.startswith("tool_call.")]
    assert [(kind, told_call["id"], told_call["status"]) for kind, told_call in told] == [
        ("tool_call.started", call["id"], "running"),
        ("tool_call.completed", call["id"], "completed"),
    ]
    assert told[-1][1]["result"] == call["result"]
    assert all(event.data["message_id"] == reply["id"] for event in seen if event.type.startswith("tool_call."))

    # Usage: both model calls of the turn, each counted once, on the reply, its run and the chat.
    steps = asyncio.run(rows(tools_server.database_url, "SELECT input_tokens, output_tokens FROM reply_steps"))
    assert len(steps) == 1 and steps[0]["output_tokens"] > 0
    usage = reply["usage"]
    assert usage["input_tokens"] > steps[0]["input_tokens"] and usage["output_tokens"] > steps[0]["output_tokens"]
    [run] = api.get(f"/ai_chats/{chat['id']}/runs").json()["data"]
    assert run["usage"] == usage
    assert chat_of(api, chat["id"])["blended_token_usage"] == usage["blended_tokens"]


def test_another_user_neither_sees_the_server_nor_gets_its_tools(
    tools_server: LiveServer, api: httpx2.Client, mcp: McpProcess
) -> None:
    server = register(api, mcp)
    with tools_server.client(tools_server.account()) as other:
        assert other.get(f"/tool_servers/{server['id']}").status_code == 404
        assert other.get("/tool_servers").json()["data"] == []
        assert "revenue__weekly_revenue" not in {tool["name"] for tool in other.get("/tools").json()["data"]}
        chat = create_chat(other, ASK_REVENUE)
        reply = last_reply(other, chat["id"], "completed", "failed")
    assert reply["tool_calls"] == [] and FIGURE not in reply["content"]


def test_the_operators_stdio_server_serves_every_user(tools_server: LiveServer, api: httpx2.Client) -> None:
    listed = {tool["name"]: tool for tool in api.get("/tools").json()["data"]}
    assert listed["ops__weekly_revenue"]["kind"] == "operator"
    assert listed["ops__weekly_revenue"]["server"] == {"id": None, "name": "ops"}
    chat = create_chat(api, 'ops__weekly_revenue {"week": "2026-W49"}')
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert FIGURE in reply["content"], (reply, log_of(tools_server))
    assert reply["tool_calls"][0]["server"] == {"id": None, "name": "ops"}


def test_a_chat_limited_to_other_tools_does_not_offer_the_server(api: httpx2.Client, mcp: McpProcess) -> None:
    register(api, mcp)
    chat = create_chat(api, ASK_REVENUE, tools=["builtin"])
    assert "tools" not in chat  # the chat object is the published clients' contract: exactly its fields
    assert api.get(f"/ai_chats/{chat['id']}/tools").json() == {"ai_chat_id": chat["id"], "tools": ["builtin"]}
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert reply["tool_calls"] == []
    assert api.put(f"/ai_chats/{chat['id']}/tools", json={"tools": None}).json()["tools"] is None
    post_message(api, chat["id"], ASK_REVENUE)
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert FIGURE in reply["content"]


def test_a_tool_that_changes_things_waits_for_approval(
    tools_server: LiveServer, api: httpx2.Client, mcp: McpProcess
) -> None:
    register(api, mcp)
    chat = create_chat(api, 'revenue__delete_record {"record_id": "r-17"}')
    reply = last_reply(api, chat["id"], "waiting")
    [call] = reply["tool_calls"]
    assert call["status"] == "awaiting_approval" and call["needs_approval"] and call["result"] is None
    seen = read_events(api, chat["id"], until=lambda event: event.type == "message.waiting")
    assert "tool_call.approval_required" in [event.type for event in seen]
    # Nothing runs meanwhile; another user cannot decide; the user approves.
    with tools_server.client(tools_server.account()) as other:
        assert other.post(f"/ai_chats/{chat['id']}/tool_calls/{call['id']}/approve").status_code == 404
    approved = api.post(f"/ai_chats/{chat['id']}/tool_calls/{call['id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert api.post(f"/ai_chats/{chat['id']}/tool_calls/{call['id']}/approve").status_code == 409
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert reply["status"] == "completed", (reply, log_of(tools_server))
    assert "Deleted record r-17" in reply["content"]
    assert reply["tool_calls"][0]["status"] == "completed"


def test_a_denied_call_is_told_to_the_model(api: httpx2.Client, mcp: McpProcess) -> None:
    register(api, mcp)
    chat = create_chat(api, 'revenue__delete_record {"record_id": "r-18"}')
    call = last_reply(api, chat["id"], "waiting")["tool_calls"][0]
    denied = api.post(f"/ai_chats/{chat['id']}/tool_calls/{call['id']}/deny")
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert "denied" in reply["content"] and "Deleted record" not in reply["content"]


def test_a_server_killed_mid_call_gives_an_error_and_the_turn_ends(
    tools_server: LiveServer, api: httpx2.Client
) -> None:
    with serving_mcp() as doomed:
        register(api, doomed, name="doomed")
        chat = create_chat(api, 'doomed__slow {"seconds": 30}')

        def running() -> bool:
            calls = messages_of(api, chat["id"])[-1]["tool_calls"]
            return bool(calls) and calls[0]["status"] == "running"

        wait_for(running, 30, "the slow call to run")
        doomed.kill()
    reply = last_reply(api, chat["id"], "completed", "failed", timeout=20)
    assert reply["status"] == "completed", (reply, log_of(tools_server))
    [call] = reply["tool_calls"]
    assert call["status"] == "failed" and call["is_error"]
    assert "doomed__slow failed" in reply["content"]
    assert api.get("/tools").status_code == 200  # the service is up


def test_a_weekly_schedule_fires_with_the_tool(tools_server: LiveServer, api: httpx2.Client, mcp: McpProcess) -> None:
    register(api, mcp)
    chat = create_chat(api, "Weekly revenue analysis, please")
    last_reply(api, chat["id"], "completed", "failed")
    schedule = api.put(
        f"/ai_chats/{chat['id']}/schedule",
        json={"prompt": f"Weekly Revenue Analysis {ASK_REVENUE}", "cron": "0 9 * * 1", "timezone": "Europe/Paris"},
    ).json()
    tools_server.cli("scheduler", "tick", "--at", schedule["next_run_at"])
    reply = reply_number(api, chat["id"], 4)
    assert FIGURE in reply["content"] and reply["tool_calls"][0]["status"] == "completed"


def test_a_schedule_limited_to_named_tools_is_offered_those_alone(
    tools_server: LiveServer, api: httpx2.Client, mcp: McpProcess
) -> None:
    """The schedule's own tool choice, not the chat's (every tool), at the time it fires:
    limited to the built-in tools, its run is not offered revenue's tool its prompt names;
    its choice cleared (``null``: the chat's), the next run is."""
    register(api, mcp)
    chat = create_chat(api, "Weekly revenue analysis, please")
    last_reply(api, chat["id"], "completed", "failed")
    body = {"prompt": f"Weekly Revenue Analysis {ASK_REVENUE}", "cron": "0 9 * * 1", "timezone": "Europe/Paris"}
    schedule = api.put(f"/ai_chats/{chat['id']}/schedule", json={**body, "tools": ["builtin"]}).json()
    assert schedule["tools"] == ["builtin"]
    tools_server.cli("scheduler", "tick", "--at", schedule["next_run_at"])
    limited = reply_number(api, chat["id"], 4)
    assert limited["status"] == "completed" and limited["tool_calls"] == [] and FIGURE not in limited["content"]

    schedule = api.put(f"/ai_chats/{chat['id']}/schedule", json={**body, "tools": None}).json()
    tools_server.cli("scheduler", "tick", "--at", schedule["next_run_times"][1])  # the first one has fired
    offered = reply_number(api, chat["id"], 6)
    assert FIGURE in offered["content"] and offered["tool_calls"][0]["name"] == "revenue__weekly_revenue"


def test_a_scheduled_run_is_refused_tools_that_change_things_unless_allowed(
    tools_server: LiveServer, api: httpx2.Client, mcp: McpProcess
) -> None:
    register(api, mcp)
    chat = create_chat(api, "Nightly clean-up")
    last_reply(api, chat["id"], "completed", "failed")
    body = {"prompt": 'revenue__delete_record {"record_id": "r-19"}', "cron": "0 3 * * *", "timezone": "UTC"}
    schedule = api.put(f"/ai_chats/{chat['id']}/schedule", json=body).json()
    assert schedule["allow_changes"] is False
    tools_server.cli("scheduler", "tick", "--at", schedule["next_run_at"])
    refused = reply_number(api, chat["id"], 4)
    assert refused["tool_calls"][0]["status"] == "failed" and "Refused" in refused["tool_calls"][0]["result"]
    assert "Deleted record" not in refused["content"]

    schedule = api.put(f"/ai_chats/{chat['id']}/schedule", json={**body, "allow_changes": True}).json()
    tools_server.cli("scheduler", "tick", "--at", schedule["next_run_times"][1])  # the first one has fired
    allowed = reply_number(api, chat["id"], 6)
    assert "Deleted record r-19" in allowed["content"] and not allowed["tool_calls"][0]["needs_approval"]


def test_built_in_tools_tell_the_time_and_set_the_chats_schedule(api: httpx2.Client) -> None:
    chat = create_chat(api, 'current_time {"timezone": "Asia/Tokyo"}')
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert "current_time said:" in reply["content"] and "Asia/Tokyo" in reply["content"]
    assert reply["tool_calls"][0]["server"] is None

    ask = 'set_schedule {"prompt": "Weekly revenue", "cron": "0 9 * * 1", "timezone": "Europe/Paris"}'
    post_message(api, chat["id"], ask)
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert reply["tool_calls"][0]["status"] == "completed" and not reply["tool_calls"][0]["needs_approval"]
    schedule = api.get(f"/ai_chats/{chat['id']}/schedule").json()
    assert schedule["cron"] == "0 9 * * 1" and schedule["timezone"] == "Europe/Paris"
    assert schedule["prompt"] == "Weekly revenue"
    assert chat_of(api, chat["id"])["title"] is not None

    post_message(api, chat["id"], 'set_schedule {"cron": "every monday"}')  # the PUT's own check: refused
    reply = last_reply(api, chat["id"], "completed", "failed")
    assert reply["tool_calls"][0]["is_error"] and "cron" in reply["tool_calls"][0]["result"]
    assert api.get(f"/ai_chats/{chat['id']}/schedule").json()["cron"] == "0 9 * * 1"


def test_stop_ends_a_reply_in_progress(tools_server: LiveServer, api: httpx2.Client, mcp: McpProcess) -> None:
    register(api, mcp)
    chat = create_chat(api, 'revenue__slow {"seconds": 20}')
    wait_for(lambda: (c := messages_of(api, chat["id"])[-1]["tool_calls"]) and c[0]["status"] == "running", 30, "run")
    reply = messages_of(api, chat["id"])[-1]
    stopped = api.post(f"/ai_chats/{chat['id']}/messages/{reply['id']}/cancel")
    assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled", stopped.text
    assert api.post(f"/ai_chats/{chat['id']}/messages/{reply['id']}/cancel").status_code == 409
    [run] = api.get(f"/ai_chats/{chat['id']}/runs").json()["data"]
    assert run["status"] == "cancelled"
    # The worker let the turn go at once: the chat's next message is answered.
    post_message(api, chat["id"], ASK_REVENUE)
    answered = last_reply(api, chat["id"], "completed", "failed", timeout=15)
    assert FIGURE in answered["content"]
    assert messages_of(api, chat["id"])[1]["status"] == "cancelled"


def test_regenerate_writes_the_last_reply_again(api: httpx2.Client) -> None:
    chat = create_chat(api, "current_time")
    first = last_reply(api, chat["id"], "completed", "failed")
    used = chat_of(api, chat["id"])["blended_token_usage"]
    again = api.post(f"/ai_chats/{chat['id']}/messages/{first['id']}/retry")
    assert again.status_code == 200 and again.json()["status"] == "pending" and again.json()["tool_calls"] == []
    second = last_reply(api, chat["id"], "completed", "failed")
    assert second["id"] == first["id"] and second["tool_calls"][0]["id"] != first["tool_calls"][0]["id"]
    assert float(chat_of(api, chat["id"])["blended_token_usage"]) == 2 * float(used)  # both writings were used
    post_message(api, chat["id"], "hello")
    last_reply(api, chat["id"], "completed", "failed")
    refused = api.post(f"/ai_chats/{chat['id']}/messages/{first['id']}/retry")  # no longer the last reply
    assert refused.status_code == 409
