"""``aichats worker`` processes sharing one PostgreSQL: crashes, and no turn run twice.

Each test gets a fresh PostgreSQL database, an ``aichats serve`` without workers (the API
only) and its own ``aichats worker`` processes, so the ``runs`` table holds exactly the
runs the test queued. PostgreSQL only: separate worker processes are its deployment.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e_agent.support import SUPPORT_PROMPT, chat_of, create_chat, messages_of, post_message, reply_to, words
from tests.support.databases import fresh_database, query
from tests.support.servers import LiveServer, WorkerProcess, launch_worker, serving, wait_started
from tests.support.sse import Event, read_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def api_server(pg_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """The API alone: every turn waits for a worker process."""
    with serving(pg_url, tmp_path / "serve", {"AICHATS_WORKERS": "0"}) as server:
        yield server


@pytest.fixture
def workers(pg_url: str, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts (``spawn``); every one is stopped afterwards."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def spawn(workers: list[WorkerProcess], url: str, tmp_path: Path, env: dict[str, str], *args: str) -> WorkerProcess:
    """Launch a worker process (stopped by the ``workers`` fixture); not yet waited for."""
    worker = launch_worker(url, tmp_path / f"worker-{len(workers)}.log", env, *args)
    workers.append(worker)
    return worker


def test_killed_worker_run_is_completed_once_by_another(
    pg_url: str, api_server: LiveServer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    env = {"AICHATS_MODEL": "test:slow", "AICHATS_RUN_LEASE_SECONDS": "2", "AICHATS_WORKERS": "1"}
    first = wait_started(spawn(workers, pg_url, tmp_path, env))
    text = " ".join(f"w{i}" for i in range(150))  # test:slow: about 3 s of streaming
    with api_server.client(api_server.account()) as api:
        chat = create_chat(api, text)

        # Follow the chat's events on the API process while other processes write them.
        received: list[tuple[float, Event]] = []

        headers = dict(api.headers)
        stream_error: list[BaseException] = []

        def follow_stream() -> None:
            def note(event: Event) -> bool:
                received.append((time.monotonic(), event))
                return event.type == "message.completed"

            try:
                with httpx2.Client(base_url=api_server.api, headers=headers) as client:
                    read_events(client, chat["id"], until=note, timeout=60)
            except BaseException as error:  # reported by the main thread
                stream_error.append(error)

        follower = threading.Thread(target=follow_stream, daemon=True)
        follower.start()

        def streaming_reply() -> dict | None:
            replies = [m for m in messages_of(api, chat["id"]) if m["role"] == "assistant"]
            if replies and replies[0]["status"] == "streaming" and len(replies[0]["content"].split()) >= 10:
                return replies[0]
            return None

        partial = wait_for(streaming_reply, 15, "the first worker to stream the reply")
        first.kill()
        stopped = messages_of(api, chat["id"])[1]
        assert stopped["id"] == partial["id"] and stopped["status"] == "streaming", stopped
        assert len(stopped["content"].split()) < 152, "the first worker finished before it was killed"

        second = wait_started(spawn(workers, pg_url, tmp_path, env))
        user = messages_of(api, chat["id"])[0]
        reply = reply_to(api, chat["id"], user["id"], timeout=30)
        assert reply["status"] == "completed", (reply, second.log())
        assert reply["id"] == partial["id"]  # the same reply, started over
        assert reply["content"] == "You said: " + text
        assert reply["usage"]["input_tokens"] == words(SUPPORT_PROMPT) + 150
        assert reply["usage"]["output_tokens"] == 152

        listed = messages_of(api, chat["id"])
        assert [(m["role"], m["status"]) for m in listed] == [("user", "completed"), ("assistant", "completed")]
        now = chat_of(api, chat["id"])
        assert now["message_count"] == 2
        assert now["blended_token_usage"] == reply["usage"]["blended_tokens"]  # counted once

        runs = query(pg_url, "SELECT status, attempts, worker_id, error FROM runs")
        assert len(runs) == 1
        assert runs[0]["status"] == "completed" and runs[0]["attempts"] == 2 and runs[0]["error"] is None
        assert f":{second.process.pid}:" in runs[0]["worker_id"]

        # The events crossed processes as they happened (LISTEN/NOTIFY), not in one late batch.
        follower.join(30)
        assert not stream_error, stream_error
        kinds = [e.type for _, e in received]
        assert kinds[-1] == "message.completed", kinds
        restarts = [
            i for i, (_, e) in enumerate(received) if e.type == "message.created" and e.data["role"] == "assistant"
        ]
        assert len(restarts) == 2, kinds  # the reply started, then started over
        last_start = restarts[-1]
        retried = [e.data["delta"] for _, e in received[last_start:] if e.type == "message.delta"]
        # What streamed live is the start of the reply (the tail comes whole in the completion,
        # whose transaction deletes the deltas), and the completion has the whole text.
        assert retried and reply["content"].startswith("".join(retried))
        assert received[-1][1].data["content"] == reply["content"]
        first_delta_at = next(t for t, e in received[last_start:] if e.type == "message.delta")
        assert received[-1][0] - first_delta_at > 1.5, "the deltas arrived all at once, not while streaming"


def test_two_worker_processes_never_run_a_turn_twice(
    pg_url: str, api_server: LiveServer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    account = api_server.account()
    expected: dict[str, list[str]] = {}

    def converse(api: httpx2.Client, i: int) -> None:
        texts = [f"chat {i} message {j} {secrets.token_hex(4)}" for j in range(2 + i % 2)]
        chat = create_chat(api, texts[0])
        for text in texts[1:]:
            post_message(api, chat["id"], text)
        expected[chat["id"]] = texts

    with api_server.client(account) as api:
        for i in range(10):  # a backlog, queued before any worker runs
            converse(api, i)
        backlog = sum(len(texts) for texts in expected.values())
        assert query(pg_url, "SELECT count(*) AS n FROM runs WHERE status = 'queued'")[0]["n"] == backlog

        # Two processes, started together, both woken by every new turn.
        env = {"AICHATS_MODEL": "test:echo"}
        started = [spawn(workers, pg_url, tmp_path, env, "--concurrency", "2") for _ in range(2)]
        for worker in started:
            wait_started(worker)
        for i in range(10, 20):  # more conversations while they work
            converse(api, i)
        total = sum(len(texts) for texts in expected.values())

        def all_done() -> bool:
            return query(pg_url, "SELECT count(*) AS n FROM runs WHERE status IN ('queued', 'running')")[0]["n"] == 0

        wait_for(all_done, 60, "every run to finish", interval=0.2)

        for chat_id, texts in expected.items():
            listed = messages_of(api, chat_id)
            users = [m for m in listed if m["role"] == "user"]
            replies = [m for m in listed if m["role"] == "assistant"]
            assert [m["content"] for m in users] == texts
            # Exactly one reply per message, completed, in the order the messages were sent.
            assert [m["content"] for m in replies] == ["You said: " + t for t in texts], listed
            assert all(m["status"] == "completed" and m["model"] == "test:echo" for m in replies), replies
            position = {m["id"]: n for n, m in enumerate(listed)}
            for asked, answered in zip(users, replies, strict=True):
                assert position[answered["id"]] > position[asked["id"]]
            assert chat_of(api, chat_id)["message_count"] == 2 * len(texts)

    assert query(pg_url, "SELECT count(*) AS n FROM runs WHERE attempts <> 1")[0]["n"] == 0
    assert query(pg_url, "SELECT count(*) AS n FROM runs WHERE status <> 'completed'")[0]["n"] == 0
    assert query(pg_url, "SELECT count(*) AS n FROM runs")[0]["n"] == total
    assert query(pg_url, "SELECT count(*) AS n FROM messages WHERE role = 'assistant'")[0]["n"] == total
    processes = {row["worker_id"].split(":")[1] for row in query(pg_url, "SELECT worker_id FROM runs")}
    assert processes == {str(w.process.pid) for w in workers}, "both processes should have taken turns"

    # SIGTERM stops an idle worker promptly and cleanly.
    for worker in workers:
        worker.process.terminate()
    for worker in workers:
        assert worker.process.wait(10) == 0, worker.log()


def test_turns_queued_before_a_worker_starts_see_the_earlier_replies(
    pg_url: str, api_server: LiveServer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Messages sent before any reply: each turn still runs after the previous one
    completed, so its prompt must hold that reply (as it does when the user waits)."""
    with api_server.client(api_server.account()) as api:
        chat = create_chat(api, "one two three")
        follow_up = post_message(api, chat["id"], "four five")
        spawn(workers, pg_url, tmp_path, {"AICHATS_MODEL": "test:echo"})
        second = reply_to(api, chat["id"], follow_up["id"], timeout=20)
        first = next(m for m in messages_of(api, chat["id"]) if m["role"] == "assistant")
        assert first["content"] == "You said: one two three" and second["content"] == "You said: four five"
        assert first["completed_at"] <= second["created_at"]
        assert second["usage"]["input_tokens"] == words(SUPPORT_PROMPT) + 3 + words(first["content"]) + 2, (
            "the second turn ran after the first reply was complete, but its prompt left that reply out"
        )
