"""Providers that are down, that hang, or that stall mid-reply, with a 3 s model timeout.

The OpenAI-compatible provider (``openai:``) and Anthropic's (``anthropic:``) point at
loopback ports: one nobody listens on (refused: transient, retried with backoff until
the timeout), and a server that accepts and never answers. Either way the reply must end
``failed`` within the timeout, the user's message staying. Both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import httpx2
import pytest

from tests.e2e_agent.support import (
    SilentServer,
    chat_of,
    closed_port,
    create_chat,
    messages_of,
    openai_stall_prelude,
    reply_to,
)
from tests.support.servers import LiveServer, log_of, serving
from tests.support.sse import read_events

pytestmark = pytest.mark.e2e
TIMEOUT = 3.0


def provider_env(openai_url: str, anthropic_url: str) -> dict[str, str]:
    """``support`` chats use openai:smollm2 at ``openai_url``; ``general`` ones Anthropic's."""
    return {
        "AICHATS_MODEL": "openai:smollm2",
        "AICHATS_MODEL_GENERAL": "anthropic:claude-test",
        "OPENAI_BASE_URL": openai_url,
        "OPENAI_API_KEY": "x",
        "ANTHROPIC_BASE_URL": anthropic_url,
        "ANTHROPIC_API_KEY": "x",
        "AICHATS_MODEL_TIMEOUT_SECONDS": str(TIMEOUT),
        "AICHATS_WORKERS": "2",
    }


@pytest.fixture(scope="module")
def down_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    port = closed_port()
    env = provider_env(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}")
    with serving(new_database(), tmp_path_factory.mktemp("down-server"), env) as server:
        yield server


@pytest.fixture(scope="module")
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


@pytest.fixture(scope="module")
def hang_server(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory, silent: SilentServer
) -> Iterator[LiveServer]:
    env = provider_env(f"http://127.0.0.1:{silent.port}/v1", f"http://127.0.0.1:{silent.port}")
    with serving(new_database(), tmp_path_factory.mktemp("hang-server"), env) as server:
        yield server


@pytest.fixture(scope="module")
def stall_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with SilentServer(prelude=openai_stall_prelude("Hello")) as stalling:
        env = provider_env(f"http://127.0.0.1:{stalling.port}/v1", f"http://127.0.0.1:{stalling.port}")
        with serving(new_database(), tmp_path_factory.mktemp("stall-server"), env) as server:
            yield server


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def fails_in_time(server: LiveServer, api: httpx2.Client, agent: str) -> tuple[dict, dict]:
    """Create a chat of ``agent``; its reply must fail within the timeout (plus slack)."""
    text = f"are you there, {agent}?"
    chat = create_chat(api, text, agent_identifier=agent)
    user = messages_of(api, chat["id"])[0]
    try:
        reply = reply_to(api, chat["id"], user["id"], timeout=10)
    except AssertionError as error:
        raise AssertionError(f"{error}: {messages_of(api, chat['id'])}\n--- log ---\n{log_of(server)}") from None
    assert reply["status"] == "failed", reply
    assert reply["completed_at"] is not None
    assert seconds(reply["created_at"], reply["completed_at"]) <= TIMEOUT + 2, reply
    assert reply["usage"] == {"input_tokens": 0, "output_tokens": 0, "blended_tokens": "0"}

    # The user's message stays, the chat counts both, and nothing was charged.
    listed = messages_of(api, chat["id"])
    assert [(m["role"], m["status"]) for m in listed] == [("user", "completed"), ("assistant", "failed")]
    assert listed[0]["content"] == text and listed[0]["id"] == user["id"]
    now = chat_of(api, chat["id"])
    assert now["message_count"] == 2 and now["blended_token_usage"] == "0"
    return chat, reply


def test_openai_provider_down_fails_after_retrying(down_server: LiveServer) -> None:
    with down_server.client(down_server.account()) as api:
        chat, reply = fails_in_time(down_server, api, "support")
        assert reply["model"] == "openai:smollm2"
        assert "openai:smollm2" in reply["error"] and "unreachable" in reply["error"], reply["error"]
        # Refused connections are transient: retried with backoff (0.5 s, 1 s) before giving up.
        assert seconds(reply["created_at"], reply["completed_at"]) >= 1.0, reply
        events = read_events(api, chat["id"], until=lambda e: e.type == "message.failed", timeout=10)
        assert [e.type for e in events] == ["message.created", "message.created", "message.failed"]
        assert events[-1].data == reply


def test_anthropic_provider_down_fails_after_retrying(down_server: LiveServer) -> None:
    with down_server.client(down_server.account()) as api:
        _, reply = fails_in_time(down_server, api, "general")
        assert reply["model"] == "anthropic:claude-test"
        assert "anthropic:claude-test" in reply["error"] and "unreachable" in reply["error"], reply["error"]
        assert seconds(reply["created_at"], reply["completed_at"]) >= 1.0, reply


@pytest.mark.parametrize(("agent", "model"), [("support", "openai:smollm2"), ("general", "anthropic:claude-test")])
def test_provider_that_never_answers_fails_at_the_timeout(
    hang_server: LiveServer, silent: SilentServer, agent: str, model: str
) -> None:
    before = silent.requests
    with hang_server.client(hang_server.account()) as api:
        _, reply = fails_in_time(hang_server, api, agent)
    assert silent.requests > before, "the provider never reached the silent server"
    assert reply["model"] == model
    assert model in reply["error"], reply["error"]
    assert seconds(reply["created_at"], reply["completed_at"]) >= TIMEOUT - 0.5, reply


def test_provider_that_stalls_mid_reply_fails_keeping_what_it_sent(stall_server: LiveServer) -> None:
    with stall_server.client(stall_server.account()) as api:
        chat, reply = fails_in_time(stall_server, api, "support")
        assert "openai:smollm2" in reply["error"], reply["error"]
        assert reply["content"] == "Hello"
        events = read_events(api, chat["id"], until=lambda e: e.type == "message.failed", timeout=10)
        # The reply's deltas were compacted when it failed: its final event keeps the text.
        assert [e.type for e in events] == ["message.created", "message.created", "message.failed"]
        assert events[-1].data["content"] == "Hello"


@pytest.fixture(scope="module")
def misconfigured_server(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A model that cannot be loaded (no such built-in local model), short leases."""
    env = {
        "AICHATS_MODEL": "local:no-such-model",
        "AICHATS_RUN_LEASE_SECONDS": "1",
        "AICHATS_MAX_RUN_ATTEMPTS": "3",
        "AICHATS_WORKERS": "1",
    }
    with serving(new_database(), tmp_path_factory.mktemp("misconfigured-server"), env) as server:
        yield server


def test_model_that_cannot_load_fails_the_reply(misconfigured_server: LiveServer) -> None:
    """Loading the model fails on every attempt: the reply must end failed (at the latest once
    AICHATS_MAX_RUN_ATTEMPTS attempts are spent), not leave the chat's turn queued forever."""
    with misconfigured_server.client(misconfigured_server.account()) as api:
        chat = create_chat(api, "hello")
        user = messages_of(api, chat["id"])[0]
        try:
            reply = reply_to(api, chat["id"], user["id"], timeout=10)
        except AssertionError as error:
            listed = [(m["role"], m["status"]) for m in messages_of(api, chat["id"])]
            raise AssertionError(
                f"{error}; the chat holds {listed}\n--- log ---\n{log_of(misconfigured_server)[-1500:]}"
            ) from None
        assert reply["status"] == "failed", reply
        assert "no-such-model" in reply["error"] or "interrupted" in reply["error"], reply["error"]
        assert chat_of(api, chat["id"])["message_count"] == 2
