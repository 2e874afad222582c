"""The real local model (SmolLM2-135M in the local engine) answering through a real server.

The reply is followed on the chat's server-sent events, as a client would, and checked
against what the messages API and the chat report afterwards; a stream resumed with
``Last-Event-ID`` replays exactly what came after. Both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from aichats.config import Settings
from tests.e2e_agent.support import LOCAL_MODEL, chat_of, create_chat, messages_of, post_message, reply_to
from tests.support.servers import LiveServer, log_of, serving
from tests.support.sse import events_within, read_events

pytestmark = pytest.mark.e2e
MAX_OUTPUT_TOKENS = 128


@pytest.fixture(scope="module")
def local_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"AICHATS_MODEL": LOCAL_MODEL, "AICHATS_WORKERS": "1", "AICHATS_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS)}
    with serving(new_database(), tmp_path_factory.mktemp("local-server"), env) as server:
        yield server


def test_reply_streams_over_events_and_resumes(local_server: LiveServer) -> None:
    text = "What is the capital of France?"
    with local_server.client(local_server.account()) as api:
        chat = create_chat(api, text)
        assert chat["message_count"] == 1 and chat["title"] is None
        try:
            events = read_events(api, chat["id"], until=lambda e: e.type == "chat.updated", timeout=60)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- server log ---\n{log_of(local_server)}") from None

        ids = [e.id for e in events]
        assert ids == sorted(set(ids)), "event ids must increase"
        types = [e.type for e in events]
        assert types[:2] == ["message.created", "message.created"], types
        assert types[-2:] == ["message.completed", "chat.updated"], types
        assert set(types[2:-2]) == {"message.delta"}, types  # read live: before their compaction

        user, started = events[0].data, events[1].data
        assert user["role"] == "user" and user["content"] == text and user["status"] == "completed"
        assert user["ai_chat_id"] == chat["id"] and user["id"].startswith("aimsg_")
        assert started["role"] == "assistant" and started["status"] == "streaming"
        assert started["model"] == LOCAL_MODEL and started["content"] == ""

        deltas = [e.data for e in events if e.type == "message.delta"]
        assert len(deltas) >= 1
        assert {d["message_id"] for d in deltas} == {started["id"]}
        done = events[-2].data
        assert done["id"] == started["id"]
        assert done["status"] == "completed" and done["error"] is None
        assert done["content"].strip(), "the reply is empty"
        # The deltas are the reply's start; the completion (which deletes them) has the whole text.
        assert done["content"].startswith("".join(d["delta"] for d in deltas))
        # Each delta says where it goes (in code points), so a client can apply it once.
        written = [len("".join(d["delta"] for d in deltas[:i])) for i in range(len(deltas))]
        assert [d["offset"] for d in deltas] == written
        assert done["model"] == LOCAL_MODEL
        usage = done["usage"]
        assert usage["input_tokens"] > 0
        assert 0 < usage["output_tokens"] <= MAX_OUTPUT_TOKENS
        assert usage["blended_tokens"] == str(usage["input_tokens"] + usage["output_tokens"])
        assert done["completed_at"] is not None

        updated = events[-1].data
        assert updated["id"] == chat["id"]
        assert updated["message_count"] == 2
        assert updated["blended_token_usage"] == usage["blended_tokens"]
        assert updated["title"] == text

        # What the API reports afterwards is what the stream said.
        listed = messages_of(api, chat["id"])
        assert [m["id"] for m in listed] == [user["id"], done["id"]]
        assert listed[1] == done
        assert listed[0]["content"] == text and listed[0]["status"] == "completed"
        assert api.get(f"/ai_chats/{chat['id']}/messages", params={"last": 1}).json()["data"] == [done]
        now = chat_of(api, chat["id"])
        assert now["message_count"] == 2
        assert now["blended_token_usage"] == usage["blended_tokens"]
        assert now["title"] == text

        # Resuming after any event (a delta, deleted since, included) replays exactly the events
        # after it, and nothing more: all but the deltas, compacted when the reply completed.
        middle = events[len(events) // 2]
        replay = read_events(
            api, chat["id"], until=lambda e: e.type == "chat.updated", last_event_id=middle.id, timeout=10
        )
        assert replay == [e for e in events if e.id > middle.id and e.type != "message.delta"]
        assert events_within(api, chat["id"], events[-1].id, 1.5) == []
        first_two = read_events(api, chat["id"], until=lambda e: e.id == events[1].id, last_event_id=0, timeout=10)
        assert first_two == events[:2]


def test_follow_up_with_local_model_carries_history(local_server: LiveServer) -> None:
    with local_server.client(local_server.account()) as api:
        chat = create_chat(api, "My name is Ada. Please remember it.")
        first_user = messages_of(api, chat["id"])[0]
        first = reply_to(api, chat["id"], first_user["id"], timeout=60)
        assert first["status"] == "completed", (first, log_of(local_server))

        follow_up = post_message(api, chat["id"], "What is my name?")
        assert follow_up["role"] == "user" and follow_up["status"] == "completed"
        assert follow_up["content"] == "What is my name?"
        second = reply_to(api, chat["id"], follow_up["id"], timeout=60)
        assert second["status"] == "completed", (second, log_of(local_server))
        assert second["content"].strip() and second["model"] == LOCAL_MODEL

        # The second prompt holds the first exchange: more tokens than the first prompt and reply.
        assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] + first["usage"]["output_tokens"] // 2
        listed = messages_of(api, chat["id"])
        assert [(m["role"], m["status"]) for m in listed] == [
            ("user", "completed"), ("assistant", "completed"), ("user", "completed"), ("assistant", "completed"),
        ]  # fmt: skip
        total = sum(int(m["usage"]["blended_tokens"]) for m in listed)
        now = chat_of(api, chat["id"])
        assert now["message_count"] == 4
        assert now["blended_token_usage"] == str(total)
        assert now["title"] == "My name is Ada. Please remember it."


def test_longest_accepted_message_is_cut_to_fit_the_context(local_server: LiveServer) -> None:
    """The API accepts 32,000 characters; the local model's window is 4,096 tokens. The
    message being answered must be cut to fit, not make the reply fail."""
    text = " ".join(str(i % 10) for i in range(15_000))  # 29,999 characters, about 2 per token
    with local_server.client(local_server.account()) as api:
        chat = create_chat(api, text)
        user = messages_of(api, chat["id"])[0]
        assert user["content"] == text  # stored whole; only the prompt is cut
        reply = reply_to(api, chat["id"], user["id"], timeout=150)  # a 4,000-token prompt to read
        assert reply["status"] == "completed", reply["error"]
        window = Settings().local_context_tokens
        assert window // 2 < reply["usage"]["input_tokens"] <= window - reply["usage"]["output_tokens"]
