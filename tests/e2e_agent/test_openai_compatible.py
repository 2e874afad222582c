"""The ``openai:`` provider against real OpenAI-compatible servers.

llama.cpp's own server (the local engine's process, run alone) serves the built-in GGUF;
aichats reaches it through the official ``openai`` SDK (``OPENAI_BASE_URL``), as it would
reach Ollama, vLLM or OpenAI. That server streams a final usage chunk: the usage recorded
is exactly what it reported. A server that reports no usage (a protocol-level one here)
gets its output counted per streamed chunk and its prompt estimated, and the log says so.
SQLite only: the provider does not touch the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_agent.support import (
    SilentServer,
    chat_of,
    create_chat,
    engine_server,
    messages_of,
    openai_stream_without_usage,
    post_message,
    reply_to,
)
from tests.support.databases import fresh_database
from tests.support.servers import LiveServer, log_of, serving

pytestmark = pytest.mark.e2e
MAX_OUTPUT_TOKENS = 96


def openai_env(base_url: str) -> dict[str, str]:
    return {
        "AICHATS_MODEL": "openai:smollm2",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "x",
        "AICHATS_WORKERS": "1",
        "AICHATS_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS),
    }


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    directory: Path = tmp_path_factory.mktemp("openai-server")
    engine_log = directory / "llama-server.log"
    with engine_server(engine_log) as base_url, fresh_database("sqlite", directory) as url:
        with serving(url, directory, openai_env(base_url)) as server:
            yield server, engine_log


def test_reply_from_llama_cpp_server_records_its_usage(openai_server: tuple[LiveServer, Path]) -> None:
    server, engine_log = openai_server
    with server.client(server.account()) as api:
        chat = create_chat(api, "Name a colour of the sky.")
        user = messages_of(api, chat["id"])[0]
        reply = reply_to(api, chat["id"], user["id"], timeout=60)
        assert reply["status"] == "completed", (reply, log_of(server))
        assert reply["model"] == "openai:smollm2"
        assert reply["content"].strip() and reply["error"] is None
        usage = reply["usage"]
        assert 0 < usage["output_tokens"] <= MAX_OUTPUT_TOKENS
        assert usage["blended_tokens"] == str(usage["input_tokens"] + usage["output_tokens"])
        # The server's own count (its log line "prompt eval time = ... / N tokens"), not an estimate.
        assert re.search(rf"prompt eval time = .* / +{usage['input_tokens']} tokens", engine_log.read_text())
        assert "streamed no usage report" not in log_of(server)
        now = chat_of(api, chat["id"])
        assert now["message_count"] == 2
        assert now["blended_token_usage"] == usage["blended_tokens"]
        assert now["title"] == "Name a colour of the sky."

        # A follow-up goes through the same provider with the history in its prompt.
        follow_up = post_message(api, chat["id"], "And the colour of grass?")
        second = reply_to(api, chat["id"], follow_up["id"], timeout=60)
        assert second["status"] == "completed", (second, log_of(server))
        assert second["usage"]["input_tokens"] > usage["input_tokens"]
        assert chat_of(api, chat["id"])["message_count"] == 4


def test_server_without_usage_report_is_counted(tmp_path: Path) -> None:
    words = ["Blue", "like", "the", "sea."]
    with (
        SilentServer(prelude=openai_stream_without_usage(words)) as provider,
        fresh_database("sqlite", tmp_path) as url,
        serving(url, tmp_path, openai_env(f"http://127.0.0.1:{provider.port}/v1")) as server,
        server.client(server.account()) as api,
    ):
        chat = create_chat(api, "Name a colour of the sky.")
        reply = reply_to(api, chat["id"], messages_of(api, chat["id"])[0]["id"], timeout=30)
        assert reply["status"] == "completed", (reply, log_of(server))
        assert reply["content"] == "Blue like the sea."
        assert reply["usage"]["output_tokens"] == len(words)  # one token per streamed chunk
        assert reply["usage"]["input_tokens"] > 0
        assert "streamed no usage report" in log_of(server)
