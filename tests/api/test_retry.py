"""Retrying a failed reply over HTTP, with a real server whose model fails, then recovers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx2
import pytest

from aichats.api.schemas import Message, MessageList, RunList
from tests.support import sse
from tests.support.api import assert_error, create
from tests.support.servers import LiveServer, serving
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def flaky_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The model fails its first two calls: within a one-second budget the first reply fails
    (a retry after 0.5 s fails again, and the next would pass the deadline); the third works.

    On a database of its own, as every module's server is: its workers must spend the
    model's two failures on this test's turn."""
    env = {"AICHATS_MODEL": "test:flaky-2", "AICHATS_MODEL_TIMEOUT_SECONDS": "1"}
    with serving(new_database(), tmp_path_factory.mktemp("retry"), env) as server:
        yield server


def replies(api: httpx2.Client, chat_id: str) -> list[dict]:
    listed = api.get(f"/ai_chats/{chat_id}/messages").json()
    return MessageList.model_validate(listed).model_dump(mode="json")["data"]


def test_a_failed_reply_completes_on_retry(flaky_server: LiveServer) -> None:
    with flaky_server.client(flaky_server.account()) as api:
        chat = create(api, title="Flaky")
        failed = wait_for(lambda: (m := replies(api, chat["id"])) and m[-1]["status"] == "failed" and m[-1])
        assert "flaky" in failed["error"]
        assert api.get(f"/ai_chats/{chat['id']}").json()["message_count"] == 2

        response = api.post(f"/ai_chats/{chat['id']}/messages/{failed['id']}/retry")
        assert response.status_code == 200, response.text
        retried = Message.model_validate(response.json()).model_dump(mode="json")
        assert (retried["id"], retried["status"], retried["content"], retried["error"]) == (
            failed["id"],
            "pending",
            "",
            None,
        )
        assert retried["completed_at"] is None and retried["usage"]["output_tokens"] == 0

        def completed() -> list[dict] | None:
            messages = replies(api, chat["id"])
            return messages if messages[-1]["status"] == "completed" else None

        messages = wait_for(completed)
        assert [(m["role"], m["status"], m["content"]) for m in messages] == [
            ("user", "completed", "Hello"),
            ("assistant", "completed", "You said: Hello"),
        ]
        assert messages[1]["id"] == failed["id"] and messages[1]["usage"]["output_tokens"] == 3
        after = api.get(f"/ai_chats/{chat['id']}").json()
        assert after["message_count"] == 2 and after["blended_token_usage"] != "0"
        runs = RunList.model_validate(api.get(f"/ai_chats/{chat['id']}/runs").json()).model_dump(mode="json")["data"]
        assert [(r["trigger"], r["status"]) for r in runs] == [("retry", "completed"), ("message", "failed")]

        kinds = []
        with api.stream("GET", f"/ai_chats/{chat['id']}/events", timeout=10) as stream:
            for event in sse.events(stream):
                kinds.append(event.event)
                if kinds[-1] == "chat.updated":
                    break
        flow = [k for k in kinds if k != "message.delta"]
        first_try = ["message.created", "message.created", "message.failed"]
        assert flow == [*first_try, "message.retried", "message.created", "message.completed", "chat.updated"]
        # Completed, it can be written again only while it is the chat's last message.
        assert api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "And?"}).status_code == 201
        assert_error(api.post(f"/ai_chats/{chat['id']}/messages/{failed['id']}/retry"), 409, "conflict", "last reply")
