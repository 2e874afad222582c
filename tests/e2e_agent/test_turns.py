"""Turns of a conversation with the deterministic test models, through a real server.

``test:echo`` answers "You said: <last user message>" and counts whitespace words of
everything it was sent (system prompt included) as input tokens, so the prompt a turn
was given can be read back from its usage. Both databases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import httpx2
import pytest
import sqlalchemy as sa

from aichats.storage import database
from aichats.storage.schema import ai_chats, chat_events
from tests.e2e_agent.support import (
    GENERAL_PROMPT,
    SUPPORT_PROMPT,
    chat_of,
    create_chat,
    messages_of,
    post_message,
    reply_to,
    words,
)
from tests.support.servers import LiveServer, log_of, serving
from tests.support.sse import read_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def echo_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``support`` chats answer with test:echo, ``general`` ones with test:slow (20 ms a word),
    whose tokens are weighted: input x 0.5, output x 2.125."""
    env = {
        "AICHATS_MODEL": "test:echo",
        "AICHATS_MODEL_GENERAL": "test:slow",
        "AICHATS_WORKERS": "2",
        "AICHATS_TOKEN_WEIGHTS": '{"test:slow": {"input": "0.5", "output": "2.125"}}',
    }
    with serving(new_database(), tmp_path_factory.mktemp("echo-server"), env) as server:
        yield server


@pytest.fixture(scope="module")
def fail_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"AICHATS_MODEL": "test:fail", "AICHATS_WORKERS": "1"}
    with serving(new_database(), tmp_path_factory.mktemp("fail-server"), env) as server:
        yield server


@pytest.fixture
def api(echo_server: LiveServer) -> Iterator[httpx2.Client]:
    with echo_server.client(echo_server.account()) as client:
        yield client


def test_follow_up_carries_the_history(api: httpx2.Client, echo_server: LiveServer) -> None:
    first_text = "alpha beta gamma"
    chat = create_chat(api, first_text)
    user1 = messages_of(api, chat["id"])[0]
    reply1 = reply_to(api, chat["id"], user1["id"])
    assert reply1["status"] == "completed", (reply1, log_of(echo_server))
    assert reply1["content"] == "You said: alpha beta gamma"
    assert reply1["model"] == "test:echo"
    assert reply1["usage"] == {
        "input_tokens": words(SUPPORT_PROMPT) + words(first_text),
        "output_tokens": 5,
        "blended_tokens": str(words(SUPPORT_PROMPT) + words(first_text) + 5),
    }

    second_text = "delta epsilon"
    user2 = post_message(api, chat["id"], second_text)
    reply2 = reply_to(api, chat["id"], user2["id"])
    assert reply2["status"] == "completed" and reply2["content"] == "You said: delta epsilon"
    # The second prompt is the first one, plus the first reply, plus the new message.
    input2 = reply2["usage"]["input_tokens"]
    assert input2 == reply1["usage"]["input_tokens"] + words(reply1["content"]) + words(second_text)

    listed = messages_of(api, chat["id"])
    assert [m["id"] for m in listed] == [user1["id"], reply1["id"], user2["id"], reply2["id"]]
    now = chat_of(api, chat["id"])
    assert now["message_count"] == 4
    expected_usage = int(reply1["usage"]["blended_tokens"]) + int(reply2["usage"]["blended_tokens"])
    assert now["blended_token_usage"] == str(expected_usage)
    assert now["title"] == first_text


def test_given_title_is_kept_and_general_agent_has_its_own_prompt(api: httpx2.Client) -> None:
    chat = create_chat(api, "one two", title="Chosen title", agent_identifier="general")
    user = messages_of(api, chat["id"])[0]
    reply = reply_to(api, chat["id"], user["id"])
    assert reply["status"] == "completed" and reply["model"] == "test:slow"
    assert reply["usage"]["input_tokens"] == words(GENERAL_PROMPT) + 2
    assert reply["usage"]["output_tokens"] == 4
    assert reply["usage"]["blended_tokens"] == "12"  # weighted: 7 x 0.5 + 4 x 2.125
    now = chat_of(api, chat["id"])
    assert now["title"] == "Chosen title"
    assert now["blended_token_usage"] == reply["usage"]["blended_tokens"]


def test_weighted_usage_adds_up_exactly(api: httpx2.Client) -> None:
    chat = create_chat(api, "a b c", agent_identifier="general")
    user1 = messages_of(api, chat["id"])[0]
    reply1 = reply_to(api, chat["id"], user1["id"])
    user2 = post_message(api, chat["id"], "d")
    reply2 = reply_to(api, chat["id"], user2["id"])
    assert reply1["status"] == reply2["status"] == "completed"
    in1, out1 = words(GENERAL_PROMPT) + 3, 5
    in2, out2 = in1 + out1 + 1, 3
    assert (reply1["usage"]["input_tokens"], reply1["usage"]["output_tokens"]) == (in1, out1)
    assert (reply2["usage"]["input_tokens"], reply2["usage"]["output_tokens"]) == (in2, out2)
    # blended = input x 0.5 + output x 2.125, as exact decimal strings without trailing zeros
    assert reply1["usage"]["blended_tokens"] == "14.625"  # 8 x 0.5 + 5 x 2.125
    assert reply2["usage"]["blended_tokens"] == "13.375"  # 14 x 0.5 + 3 x 2.125
    assert chat_of(api, chat["id"])["blended_token_usage"] == "28"


def test_events_refuse_a_malformed_last_event_id(api: httpx2.Client) -> None:
    chat = create_chat(api, "hi")
    response = api.get(f"/ai_chats/{chat['id']}/events", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_request"


def test_generated_title_is_the_first_line_cut_at_a_word(api: httpx2.Client) -> None:
    text = "Summarise the revenue of every store in the northern region for the last quarter\nthanks"
    chat = create_chat(api, text)
    user = messages_of(api, chat["id"])[0]
    assert reply_to(api, chat["id"], user["id"])["status"] == "completed"
    title = chat_of(api, chat["id"])["title"]
    assert title == "Summarise the revenue of every store in the northern region…"


def test_follow_up_sent_while_streaming_waits_for_the_reply_and_sees_it(api: httpx2.Client) -> None:
    """A follow-up sent while the first reply streams waits for it, then answers with it in context."""
    first_text = " ".join(f"w{i}" for i in range(40))  # test:slow: about 0.8 s of streaming
    chat = create_chat(api, first_text, agent_identifier="general")
    user1 = messages_of(api, chat["id"])[0]
    wait_for(
        lambda: any(m["status"] == "streaming" for m in messages_of(api, chat["id"])), 10, "the first reply to start"
    )
    user2 = post_message(api, chat["id"], "and then")
    reply2 = reply_to(api, chat["id"], user2["id"])
    listed = messages_of(api, chat["id"])
    replies = [m for m in listed if m["role"] == "assistant"]
    assert len(replies) == 2 and all(m["status"] == "completed" for m in replies), replies
    reply1 = replies[0]
    assert reply1["content"] == "You said: " + first_text
    assert reply2["content"] == "You said: and then"
    assert replies[1]["id"] == reply2["id"]
    # Turns run one at a time, in order: the second starts once the first is complete.
    assert reply1["completed_at"] <= reply2["created_at"]
    # The second turn was given the whole conversation so far, the first reply included.
    assert reply2["usage"]["input_tokens"] == (
        words(GENERAL_PROMPT) + words(first_text) + words(reply1["content"]) + words("and then")
    ), "the reply to the follow-up was generated without the first reply in its context"
    # The transcript reads as the conversation happened: each reply right after its message.
    assert [m["id"] for m in listed] == [user1["id"], reply1["id"], user2["id"], reply2["id"]]


_DELTA_ROWS = (
    sa.select(sa.func.count().label("n"))
    .select_from(chat_events.join(ai_chats, chat_events.c.chat_pk == ai_chats.c.pk))
    .where(ai_chats.c.id == sa.bindparam("chat_id"), chat_events.c.type == "message.delta")
)


def delta_rows(database_url: str, chat_id: str) -> int:
    """The ``message.delta`` rows of the chat still in the server's database."""

    async def run() -> int:
        db = await database.connect(database_url, pool_size=1)
        try:
            row = await db.fetch_one(_DELTA_ROWS, {"chat_id": chat_id})
            assert row is not None
            return int(row["n"])
        finally:
            await db.close()

    return asyncio.run(run())


def test_a_completed_reply_replays_whole_without_its_deltas(api: httpx2.Client, echo_server: LiveServer) -> None:
    """A reply streams as deltas; once it completes they are deleted, and a replay from the
    start, or from the id of a delta seen while it streamed, still ends with the whole text."""
    text = " ".join(f"w{i}" for i in range(40))  # test:slow: about 0.8 s of streaming
    chat = create_chat(api, text, agent_identifier="general")
    live = read_events(api, chat["id"], until=lambda e: e.type in ("message.delta", "message.completed"))
    assert live[-1].type == "message.delta", [e.type for e in live]
    mid_reply = live[-1].id
    reply = reply_to(api, chat["id"], messages_of(api, chat["id"])[0]["id"])
    assert reply["status"] == "completed" and reply["content"] == "You said: " + text
    assert delta_rows(echo_server.database_url, chat["id"]) == 0

    replay = read_events(api, chat["id"], until=lambda e: e.type == "chat.updated", timeout=10)
    assert [e.type for e in replay] == ["message.created", "message.created", "message.completed", "chat.updated"]
    assert replay[1].data["id"] == reply["id"] and replay[1].data["content"] == ""
    assert replay[2].data == reply
    resumed = read_events(api, chat["id"], last_event_id=mid_reply, until=lambda e: e.type == "chat.updated")
    assert [e.type for e in resumed] == ["message.completed", "chat.updated"]
    assert resumed[0].data == reply


def test_text_attachment_is_inlined_into_the_prompt(api: httpx2.Client) -> None:
    body = b"Revenue grew four percent week over week."
    upload = api.post("/files", files={"file": ("notes.txt", body, "text/plain")})
    assert upload.status_code == 201, upload.text
    file = upload.json()
    assert file["id"].startswith("file_") and file["filename"] == "notes.txt" and file["size"] == len(body)

    text = "summarise this"
    chat = create_chat(api, text, message_attachments=[{"id": file["id"]}])
    user = messages_of(api, chat["id"])[0]
    assert user["attachments"] == [file]
    reply = reply_to(api, chat["id"], user["id"])
    assert reply["status"] == "completed"
    inlined = words(f"{text}\n\n[Attached file notes.txt]\n{body.decode()}")
    assert reply["usage"]["input_tokens"] == words(SUPPORT_PROMPT) + inlined
    assert reply["content"].startswith("You said: summarise this [Attached file notes.txt] Revenue")


def test_another_users_chat_is_not_found(echo_server: LiveServer) -> None:
    owner, stranger = echo_server.account(), echo_server.account()
    with echo_server.client(owner) as mine, echo_server.client(stranger) as theirs:
        chat = create_chat(mine, "private words")
        user = messages_of(mine, chat["id"])[0]
        assert reply_to(mine, chat["id"], user["id"])["status"] == "completed"

        response = theirs.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "let me in"})
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found"
        assert theirs.get(f"/ai_chats/{chat['id']}/messages").status_code == 404
        assert theirs.get(f"/ai_chats/{chat['id']}/events").status_code == 404

        assert [m["content"] for m in messages_of(mine, chat["id"])] == ["private words", "You said: private words"]
        assert chat_of(mine, chat["id"])["message_count"] == 2


def test_another_users_file_cannot_be_attached(echo_server: LiveServer) -> None:
    owner, stranger = echo_server.account(), echo_server.account()
    with echo_server.client(owner) as mine, echo_server.client(stranger) as theirs:
        upload = theirs.post("/files", files={"file": ("secret.txt", b"the stranger's secret", "text/plain")})
        assert upload.status_code == 201, upload.text
        foreign = [{"id": upload.json()["id"]}]

        response = mine.post("/ai_chats", json={"message_text": "read it", "message_attachments": foreign})
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found"
        assert mine.get("/ai_chats").json()["data"] == []

        chat = create_chat(mine, "hello")
        user = messages_of(mine, chat["id"])[0]
        assert reply_to(mine, chat["id"], user["id"])["status"] == "completed"
        events_before = read_events(mine, chat["id"], until=lambda e: e.type == "chat.updated", timeout=10)

        response = mine.post(
            f"/ai_chats/{chat['id']}/messages", json={"message_text": "read it", "message_attachments": foreign}
        )
        assert response.status_code == 404, response.text
        unknown = mine.post(
            f"/ai_chats/{chat['id']}/messages", json={"message_text": "x", "message_attachments": [{"id": "file_nope"}]}
        )
        assert unknown.status_code == 404, unknown.text

        # Nothing was stored: no message, no count, no event, no queued turn answering later.
        time.sleep(1.5)  # workers poll every second: a queued turn would have been answered
        assert [m["content"] for m in messages_of(mine, chat["id"])] == ["hello", "You said: hello"]
        now = chat_of(mine, chat["id"])
        assert now["message_count"] == 2
        replay = read_events(mine, chat["id"], until=lambda e: e.id == events_before[-1].id, timeout=10)
        assert replay == events_before


def test_failed_reply_keeps_the_user_message(fail_server: LiveServer) -> None:
    with fail_server.client(fail_server.account()) as api:
        chat = create_chat(api, "please answer")
        events = read_events(api, chat["id"], until=lambda e: e.type == "message.failed", timeout=30)
        assert [e.type for e in events] == ["message.created", "message.created", "message.failed"]
        failed = events[-1].data
        assert failed["role"] == "assistant" and failed["status"] == "failed"
        assert failed["error"] == "the test model was told to fail"
        assert failed["usage"] == {"input_tokens": 0, "output_tokens": 0, "blended_tokens": "0"}
        assert failed["completed_at"] is not None

        listed = messages_of(api, chat["id"])
        assert [(m["role"], m["status"], m["content"]) for m in listed] == [
            ("user", "completed", "please answer"),
            ("assistant", "failed", ""),
        ]
        assert listed[1] == failed
        now = chat_of(api, chat["id"])
        assert now["message_count"] == 2 and now["blended_token_usage"] == "0"

        # The chat goes on: a new message gets a new turn (which fails the same way).
        again = post_message(api, chat["id"], "try again")
        second = reply_to(api, chat["id"], again["id"])
        assert second["status"] == "failed" and second["id"] != failed["id"]
        assert [m["role"] for m in messages_of(api, chat["id"])] == ["user", "assistant", "user", "assistant"]
        assert chat_of(api, chat["id"])["message_count"] == 4


@pytest.fixture(scope="module")
def flaky_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``support``: test:flaky-2 (its first two calls fail transiently); ``general``: always flaky."""
    env = {
        "AICHATS_MODEL": "test:flaky-2",
        "AICHATS_MODEL_GENERAL": "test:flaky-1000",
        "AICHATS_MODEL_TIMEOUT_SECONDS": "2",
        "AICHATS_WORKERS": "1",
    }
    with serving(new_database(), tmp_path_factory.mktemp("flaky-server"), env) as server:
        yield server


def test_transient_failures_are_retried_with_backoff(flaky_server: LiveServer) -> None:
    with flaky_server.client(flaky_server.account()) as api:
        chat = create_chat(api, "still there?")
        user = messages_of(api, chat["id"])[0]
        reply = reply_to(api, chat["id"], user["id"], timeout=10)
        assert reply["status"] == "completed", (reply, log_of(flaky_server))
        assert reply["content"] == "You said: still there?" and reply["error"] is None
        # Two failures, then success: backoff of 0.5 s and 1 s came first.
        assert seconds_between(reply["created_at"], reply["completed_at"]) >= 1.4, reply
        assert chat_of(api, chat["id"])["message_count"] == 2


def test_transient_failures_past_the_timeout_fail_the_reply(flaky_server: LiveServer) -> None:
    with flaky_server.client(flaky_server.account()) as api:
        chat = create_chat(api, "hello?", agent_identifier="general")
        user = messages_of(api, chat["id"])[0]
        reply = reply_to(api, chat["id"], user["id"], timeout=10)
        assert reply["status"] == "failed", reply
        assert reply["error"] == "the test model is flaky (try again)"
        assert 1.0 <= seconds_between(reply["created_at"], reply["completed_at"]) <= 4.0, reply
        assert [m["role"] for m in messages_of(api, chat["id"])] == ["user", "assistant"]


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
