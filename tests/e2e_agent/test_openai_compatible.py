"""The ``openai:`` provider against a real OpenAI-compatible server: llama.cpp's own.

``python -m llama_cpp.server`` serves the built-in GGUF; aichats reaches it through the
official ``openai`` SDK (``OPENAI_BASE_URL``). That server streams no usage chunk, so the
provider counts the streamed chunks and estimates the prompt (and logs that it did).
SQLite only: the provider does not touch the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer
from tests.e2e_agent.support import (
    chat_of,
    create_chat,
    fresh_database,
    llama_server,
    log_of,
    messages_of,
    post_message,
    reply_to,
    serving,
)

pytestmark = pytest.mark.e2e
MAX_OUTPUT_TOKENS = 96


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory: Path = tmp_path_factory.mktemp("openai-server")
    with llama_server(directory / "llama-server.log") as base_url, fresh_database("sqlite", directory) as url:
        env = {
            "AICHATS_MODEL": "openai:smollm2",
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "x",
            "AICHATS_WORKERS": "1",
            "AICHATS_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS),
        }
        with serving(url, directory, env) as server:
            yield server


def test_reply_from_llama_cpp_server_records_usage(openai_server: LiveServer) -> None:
    with openai_server.client(openai_server.account()) as api:
        chat = create_chat(api, "Name a colour of the sky.")
        user = messages_of(api, chat["id"])[0]
        reply = reply_to(api, chat["id"], user["id"], timeout=60)
        assert reply["status"] == "completed", (reply, log_of(openai_server))
        assert reply["model"] == "openai:smollm2"
        assert reply["content"].strip() and reply["error"] is None
        usage = reply["usage"]
        assert usage["input_tokens"] > 0
        assert 0 < usage["output_tokens"] <= MAX_OUTPUT_TOKENS
        assert usage["blended_tokens"] == str(usage["input_tokens"] + usage["output_tokens"])
        now = chat_of(api, chat["id"])
        assert now["message_count"] == 2
        assert now["blended_token_usage"] == usage["blended_tokens"]
        assert now["title"] == "Name a colour of the sky."
        assert "streamed no usage report" in log_of(openai_server)

        # A follow-up goes through the same provider with the history in its prompt.
        follow_up = post_message(api, chat["id"], "And the colour of grass?")
        second = reply_to(api, chat["id"], follow_up["id"], timeout=60)
        assert second["status"] == "completed", (second, log_of(openai_server))
        assert second["usage"]["input_tokens"] > usage["input_tokens"]
        assert chat_of(api, chat["id"])["message_count"] == 4
