"""The deployment of docs/deployment.md, small: PostgreSQL, two API processes, two worker
processes, under load, one worker killed mid-way and started again. Nothing is lost.

Two ``aichats serve --processes 1`` with ``AICHATS_WORKERS=0`` (the API alone), with no load
balancer: the test talks to both, creating chats on one and posting to them on the
other. Two ``aichats worker`` processes answer, each with many turns in flight. One is
killed with SIGKILL while it holds runs, and a new one started: the runs it held are
taken over when their leases lapse. Every user message gets exactly one completed reply,
in order per chat; no run is lost or run twice to completion.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e_agent.support import chat_of, create_chat, messages_of, post_message
from tests.support.databases import fresh_database, query
from tests.support.servers import LiveServer, WorkerProcess, launch_worker, serving, wait_started
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

CLIENTS = 8  # threads sending the load, each on both API processes
CHATS_PER_CLIENT = 6
MESSAGES_PER_CHAT = 3  # the first (with the chat) and two follow-ups, sent without waiting for replies
# test:slow writes a word each 20 ms: a reply of ~22 words is in flight for ~0.45 s. A short
# lease, so that the killed worker's runs are taken over within seconds.
WORKER_ENV = {"AICHATS_MODEL": "test:slow", "AICHATS_RUN_LEASE_SECONDS": "2"}


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def apis(pg_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    with (
        serving(pg_url, tmp_path / "api-a", {"AICHATS_WORKERS": "0"}) as a,
        serving(pg_url, tmp_path / "api-b", {"AICHATS_WORKERS": "0"}) as b,
    ):
        yield a, b


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_worker(workers: list[WorkerProcess], url: str, tmp_path: Path) -> WorkerProcess:
    worker = launch_worker(url, tmp_path / f"worker-{len(workers)}.log", WORKER_ENV)
    workers.append(worker)
    return wait_started(worker)


def test_two_api_and_two_worker_processes_under_load_lose_nothing(
    pg_url: str, apis: tuple[LiveServer, LiveServer], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    account = apis[0].account()
    doomed = start_worker(workers, pg_url, tmp_path)
    start_worker(workers, pg_url, tmp_path)

    sent: dict[str, list[str]] = {}  # chat id -> its user messages' texts, in the order sent
    lock = threading.Lock()
    errors: list[BaseException] = []
    halfway = threading.Event()

    def load(client: int) -> None:
        try:
            with apis[0].client(account) as a, apis[1].client(account) as b:
                for n in range(CHATS_PER_CLIENT):
                    first, second = (a, b) if (client + n) % 2 else (b, a)
                    texts = [
                        f"client {client} chat {n} message {m} {secrets.token_hex(3)} {' '.join(['word'] * 15)}"
                        for m in range(MESSAGES_PER_CHAT)
                    ]
                    chat = create_chat(first, texts[0])
                    with lock:
                        sent[chat["id"]] = texts[:1]
                    for text in texts[1:]:  # on the other API process, without waiting for replies
                        post_message(second, chat["id"], text)
                        with lock:
                            sent[chat["id"]].append(text)
                    if n == CHATS_PER_CLIENT // 2:
                        halfway.set()
        except BaseException as error:  # reported by the test's thread
            errors.append(error)

    threads = [threading.Thread(target=load, args=(client,), daemon=True) for client in range(CLIENTS)]
    for thread in threads:
        thread.start()

    # Mid-way, once the doomed worker holds runs: SIGKILL it, and start another in its place.
    pid = doomed.process.pid

    def held_by_doomed() -> set[int]:
        rows = query(pg_url, "SELECT pk FROM runs WHERE status = 'running' AND worker_id LIKE $1", f"%:{pid}:%")
        return {row["pk"] for row in rows}

    wait_for(lambda: halfway.is_set() and held_by_doomed(), 60, "the first worker to hold runs mid-way", interval=0.02)
    doomed.kill()
    held = held_by_doomed()  # after the kill: what it held then stays its until taken over
    start_worker(workers, pg_url, tmp_path)

    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(sent) == CLIENTS * CHATS_PER_CLIENT

    def all_done() -> bool:
        return query(pg_url, "SELECT count(*) AS n FROM runs WHERE status IN ('queued', 'running')")[0]["n"] == 0

    wait_for(all_done, 120, "every run to finish", interval=0.2)

    # Every user message has exactly one run, completed once; the killed worker's were taken over.
    total = CLIENTS * CHATS_PER_CLIENT * MESSAGES_PER_CHAT
    runs = query(pg_url, "SELECT pk, status, attempts, worker_id, user_message_pk, assistant_message_pk FROM runs")
    assert len(runs) == total
    assert {run["status"] for run in runs} == {"completed"}, [r for r in runs if r["status"] != "completed"]
    assert len({run["user_message_pk"] for run in runs}) == total  # one run per message: none doubled
    assert len({run["assistant_message_pk"] for run in runs}) == total  # each wrote a reply of its own
    taken_over = [run for run in runs if run["pk"] in held]
    # (Others may have been claimed again too, had a live worker stalled past its 2 s lease
    # on a busy machine: each still completed once.)
    assert taken_over and all(run["attempts"] >= 2 and f":{pid}:" not in run["worker_id"] for run in taken_over)
    assert query(pg_url, "SELECT count(*) AS n FROM messages WHERE role = 'assistant'")[0]["n"] == total

    # Each chat, read through either API process: its messages in the order sent, each
    # answered once, in order, completed, and counted once.
    with apis[0].client(account) as a, apis[1].client(account) as b:
        for n, (chat_id, texts) in enumerate(sorted(sent.items())):
            api = (a, b)[n % 2]
            listed = messages_of(api, chat_id)
            users = [m for m in listed if m["role"] == "user"]
            replies = [m for m in listed if m["role"] == "assistant"]
            assert [m["content"] for m in users] == texts
            assert [m["content"] for m in replies] == ["You said: " + text for text in texts], listed
            assert all(m["status"] == "completed" for m in replies), replies
            position = {m["id"]: i for i, m in enumerate(listed)}
            for asked, answered in zip(users, replies, strict=True):
                assert position[answered["id"]] > position[asked["id"]]
            for earlier, later in itertools.pairwise(replies):
                assert earlier["completed_at"] <= later["created_at"], "a chat's turns overlapped"
            chat = chat_of(api, chat_id)
            assert chat["message_count"] == 2 * len(texts)
            usage = sum(Decimal(str(r["usage"]["blended_tokens"])) for r in replies)
            assert usage == Decimal(str(chat["blended_token_usage"]))  # each reply counted once
