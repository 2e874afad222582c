"""Messages, files and the events stream over real HTTP (no workers: nothing answers)."""

from __future__ import annotations

import httpx2
import orjson
import pytest

from aichats.api.schemas import File, MessageList
from tests.api.test_ai_chats import assert_error, create
from tests.conftest import LiveServer


def upload(
    api: httpx2.Client, content: bytes = b"hello", name: str = "a.txt", kind: str = "text/plain"
) -> httpx2.Response:
    return api.post("/files", files={"file": (name, content, kind)})


def test_post_and_list_messages(api: httpx2.Client) -> None:
    chat = create(api, title="t")
    response = api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "second", "message_source": "link"})
    assert response.status_code == 201, response.text
    message = response.json()
    assert message["id"].startswith("aimsg_") and message["ai_chat_id"] == chat["id"]
    assert (message["role"], message["status"], message["source"], message["content"]) == (
        "user",
        "completed",
        "link",
        "second",
    )
    assert message["usage"] == {"input_tokens": 0, "output_tokens": 0, "blended_tokens": "0"}

    listed = api.get(f"/ai_chats/{chat['id']}/messages").json()
    MessageList.model_validate(listed)
    # Each user message is followed by its reply-to-be, pending until a worker starts it.
    assert [(m["role"], m["status"], m["content"]) for m in listed["data"]] == [
        ("user", "completed", "Hello"),
        ("assistant", "pending", ""),
        ("user", "completed", "second"),
        ("assistant", "pending", ""),
    ]
    newest = api.get(f"/ai_chats/{chat['id']}/messages", params={"last": 2}).json()
    assert [m["content"] for m in newest["data"]] == ["second", ""] and newest["page_info"]["has_previous_page"]
    assert api.get(f"/ai_chats/{chat['id']}").json()["message_count"] == 2  # pending replies do not count


def test_message_validation_and_ownership(live_server: LiveServer, api: httpx2.Client) -> None:
    chat = create(api)
    path = f"/ai_chats/{chat['id']}/messages"
    assert_error(api.post(path, json={"message_text": ""}), 422, "invalid_request", "message_text")
    assert_error(api.post(path, json={"message_text": "x", "message_source": "schedule"}), 422, "invalid_request")
    assert_error(
        api.post(path, json={"message_text": "x", "message_attachments": [{"id": "file_nothere"}]}), 404, "not_found"
    )
    with live_server.client(live_server.account()) as other:
        assert_error(other.post(path, json={"message_text": "x"}), 404, "not_found")
        assert_error(other.get(path), 404, "not_found")
        assert_error(other.get(f"/ai_chats/{chat['id']}/events"), 404, "not_found")
        theirs = upload(other).json()["id"]
    assert_error(api.post(path, json={"message_text": "x", "message_attachments": [{"id": theirs}]}), 404, "not_found")
    assert len(api.get(path).json()["data"]) == 2  # the first message and its pending reply: nothing new


def test_files(live_server: LiveServer, api: httpx2.Client) -> None:
    response = upload(api, b"Revenue: 42", "report.txt")
    assert response.status_code == 201, response.text
    record = File.model_validate(response.json()).model_dump()
    assert record["id"].startswith("file_") and record == {
        "id": record["id"],
        "filename": "report.txt",
        "content_type": "text/plain",
        "size": 11,
    }
    chat = create(api, message_attachments=[{"id": record["id"]}])
    first = api.get(f"/ai_chats/{chat['id']}/messages").json()["data"][0]
    assert first["attachments"] == [record]

    assert_error(upload(api, b"MZ", "x.exe", "application/x-msdownload"), 422, "invalid_request", "not accepted")
    assert_error(api.post("/files", content=b"plain", headers={"Content-Type": "text/plain"}), 400, "bad_request")
    assert_error(api.post("/files", files={"other": ("a.txt", b"x", "text/plain")}), 422, "invalid_request", "'file'")
    assert_error(upload(api, b"x" * (10_485_760 + 1)), 413, "payload_too_large")


@pytest.mark.parametrize("last_event_id", ["abc", "-1"])
def test_bad_last_event_id(api: httpx2.Client, last_event_id: str) -> None:
    chat = create(api)
    response = api.get(f"/ai_chats/{chat['id']}/events", headers={"Last-Event-ID": last_event_id})
    assert_error(response, 422, "invalid_request", "Last-Event-ID")


def test_events_replay_from_the_start_and_resume(api: httpx2.Client) -> None:
    chat = create(api)
    api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "again"})
    seen: list[tuple[str, str]] = []
    with api.stream("GET", f"/ai_chats/{chat['id']}/events", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id = event = ""
        for line in response.iter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                seen.append((event_id, event))
                if len(seen) == 2:
                    break
    assert [kind for _, kind in seen] == ["message.created", "message.created"]
    with api.stream(
        "GET", f"/ai_chats/{chat['id']}/events", headers={"Last-Event-ID": seen[0][0]}, timeout=5
    ) as response:
        first_id = next(line[3:].strip() for line in response.iter_lines() if line.startswith("id:"))
    assert first_id == seen[1][0]


def test_events_from_latest_send_only_what_follows(api: httpx2.Client) -> None:
    chat = create(api)
    with api.stream("GET", f"/ai_chats/{chat['id']}/events?after=latest", timeout=5) as response:
        # The response has started, so the stream's start is fixed: the chat's past is behind it.
        lines = response.iter_lines()
        posted = api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "after"}).json()
        data = next(line[5:].strip() for line in lines if line.startswith("data:"))
    assert orjson.loads(data)["id"] == posted["id"]  # the first event is the new message, not the chat's first


def test_only_failed_replies_can_be_retried(live_server: LiveServer, api: httpx2.Client) -> None:
    chat = create(api)
    user, pending = api.get(f"/ai_chats/{chat['id']}/messages").json()["data"]
    path = f"/ai_chats/{chat['id']}/messages/{{}}/retry"
    assert_error(api.post(path.format(pending["id"])), 409, "conflict", "only a failed reply")
    assert_error(api.post(path.format(user["id"])), 409, "conflict", "user's message")
    assert_error(api.post(path.format("aimsg_nothere")), 404, "not_found")
    with live_server.client(live_server.account()) as other:
        assert_error(other.post(path.format(pending["id"])), 404, "not_found")
    with live_server.client(live_server.account(scopes="ai_chat:read")) as reader:
        assert_error(reader.post(path.format(pending["id"])), 403, "forbidden", "ai_chat:create")
    assert api.get(f"/ai_chats/{chat['id']}/messages").json()["data"] == [user, pending]  # nothing changed
    assert len(api.get(f"/ai_chats/{chat['id']}/runs").json()["data"]) == 1
