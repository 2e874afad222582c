"""Tools through a real ``aichats serve`` with each kind of real provider: the OpenAI and
Anthropic protocols (test servers that stream tool calls the way those APIs do) and the local
engine (llama.cpp, the built-in model). Both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e_agent.support import create_chat
from tests.e2e_agent.test_tools import ASK_REVENUE, FIGURE, last_reply, register
from tests.support.anthropic_server import anthropic_server
from tests.support.mcp_server import McpProcess, serving_mcp
from tests.support.openai_server import openai_server
from tests.support.servers import LiveServer, log_of, serving

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mcp() -> Iterator[McpProcess]:
    with serving_mcp() as server:
        yield server


@contextmanager
def _served(new_database: Callable[[], str], directory: Path, env: dict[str, str]) -> Iterator[LiveServer]:
    settings = {"AICHATS_WORKERS": "2", "AICHATS_TOOLS_ALLOW_PRIVATE_URLS": "true", **env}
    with serving(new_database(), directory, settings) as server:
        yield server


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_providers_tool_calls_reach_the_mcp_server_and_its_figure_the_reply(
    protocol: str, new_database: Callable[[], str], tmp_path: Path, mcp: McpProcess
) -> None:
    double = openai_server() if protocol == "openai" else anthropic_server()
    with double as provider:
        if protocol == "openai":
            env = {"AICHATS_MODEL": "openai:gpt-test", "OPENAI_BASE_URL": provider.url}
        else:
            env = {
                "AICHATS_MODEL": "anthropic:claude-test",
                "ANTHROPIC_BASE_URL": provider.url,
                "ANTHROPIC_API_KEY": "k",
            }
        with _served(new_database, tmp_path, env) as server:
            with server.client(server.account()) as api:
                register(api, mcp)
                chat = create_chat(api, f"How much last week? {ASK_REVENUE}")
                reply = last_reply(api, chat["id"], "completed", "failed")
            assert reply["status"] == "completed", (reply, log_of(server))
            assert FIGURE in reply["content"]
            assert reply["tool_calls"][0]["status"] == "completed"
        offered = provider.requests[0]["tools"]
        names = [tool["function"]["name"] if protocol == "openai" else tool["name"] for tool in offered]
        assert "revenue__weekly_revenue" in names and "current_time" in names
        assert FIGURE in str(provider.requests[1]["messages"][-1])  # the result went back to the model


def test_the_local_engine_calls_a_tool_in_a_chat(new_database: Callable[[], str], tmp_path: Path) -> None:
    """The built-in model through the whole service, told to call a tool first
    (``AICHATS_LOCAL_TOOL_CHOICE=required``): at least one call, run, and an answer after it."""
    env = {"AICHATS_MODEL": "local:smollm2-135m", "AICHATS_LOCAL_TOOL_CHOICE": "required"}
    with _served(new_database, tmp_path, env) as server:
        with server.client(server.account()) as api:
            chat = create_chat(api, "What time is it in Tokyo?", tools=["current_time"])
            reply = last_reply(api, chat["id"], "completed", "failed", timeout=180)
        assert reply["status"] == "completed", (reply, log_of(server))
        calls = reply["tool_calls"]
        assert calls and {call["name"] for call in calls} == {"current_time"}, calls
        assert all(call["status"] in ("completed", "failed") and call["result"] for call in calls)


def test_a_step_resumed_after_approval_shows_the_model_each_result_once(
    new_database: Callable[[], str], tmp_path: Path, mcp: McpProcess
) -> None:
    """One step calls a read-only tool (it runs at once) and one that changes things (it
    waits). Approved, the turn goes on: the model is sent both results, each once, in order."""
    with openai_server() as provider:
        env = {"AICHATS_MODEL": "openai:gpt-test", "OPENAI_BASE_URL": provider.url}
        with _served(new_database, tmp_path, env) as server, server.client(server.account()) as api:
            register(api, mcp)
            ask = 'revenue__weekly_revenue revenue__delete_record {"week": "2026-W49", "record_id": "r-20"}'
            chat = create_chat(api, ask)
            waiting = last_reply(api, chat["id"], "waiting")
            ran, asking = waiting["tool_calls"]
            assert (ran["status"], asking["status"]) == ("completed", "awaiting_approval")
            assert api.post(f"/ai_chats/{chat['id']}/tool_calls/{asking['id']}/approve").status_code == 200
            reply = last_reply(api, chat["id"], "completed", "failed")
            assert reply["status"] == "completed", (reply, log_of(server))
        assert FIGURE in reply["content"] and "Deleted record r-20" in reply["content"]
        resumed = provider.requests[-1]["messages"]
        results = [message["tool_call_id"] for message in resumed if message["role"] == "tool"]
        asked = [call["id"] for message in resumed if message.get("tool_calls") for call in message["tool_calls"]]
        assert results == asked and len(results) == 2
