"""Messages, files and the events stream over real HTTP (no workers: nothing answers)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx2
import orjson
import pytest
import sqlalchemy as sa

from aichats.api.schemas import File, MessageList
from aichats.services import events
from aichats.storage import database
from aichats.storage.schema import ai_chats
from tests.support import sse
from tests.support.accounts import Account
from tests.support.api import assert_error, create
from tests.support.servers import LiveServer


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


def test_large_uploads_are_parsed_as_they_arrive(api: httpx2.Client) -> None:
    """A file of exactly the limit is taken whole; a body past the cap without a
    Content-Length (chunked) is cut off with a 413 while it streams."""
    limit = 10_485_760
    response = upload(api, b"y" * limit, "big.txt")
    assert response.status_code == 201, response.text
    assert response.json()["size"] == limit

    boundary = "aichats-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()

    def chunked() -> Iterator[bytes]:
        yield head
        for _ in range(12):  # 12 MiB, in 1 MiB chunks
            yield b"z" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert_error(api.post("/files", content=chunked(), headers=headers), 413, "payload_too_large")
    assert_error(api.post("/files", content=b"--x\r\n", headers=headers), 400, "bad_request")


BAD_EVENT_IDS = ["abc", "-1", "\u00b2", "1\u00b2", "\u0661", "1e3", " 1", "+1", str(2**63), "9" * 5000]


@pytest.mark.parametrize("last_event_id", BAD_EVENT_IDS)
def test_bad_last_event_id(api: httpx2.Client, last_event_id: str) -> None:
    """Only ASCII digits up to 2^63 - 1: anything else (even what ``str.isdigit`` takes, or an
    id past the database's BIGINT) is a 422 before the stream starts, never a 500 or a cut stream."""
    chat = create(api)
    path = f"/ai_chats/{chat['id']}/events"
    assert_error(api.get(path, params={"after": last_event_id}), 422, "invalid_request", "Last-Event-ID")
    if last_event_id == last_event_id.strip():  # a header value has no surrounding spaces
        response = api.get(path, headers={b"Last-Event-ID": last_event_id.encode()})  # UTF-8 bytes, as sent
        assert_error(response, 422, "invalid_request", "Last-Event-ID")


def test_largest_event_id_is_accepted(api: httpx2.Client) -> None:
    chat = create(api)
    with api.stream("GET", f"/ai_chats/{chat['id']}/events", params={"after": str(2**63 - 1)}, timeout=5) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")


def test_events_replay_from_the_start_and_resume(api: httpx2.Client) -> None:
    chat = create(api)
    api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "again"})
    seen: list[tuple[str, str]] = []
    with api.stream("GET", f"/ai_chats/{chat['id']}/events", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse.events(response):
            seen.append((event.id, event.event))
            if len(seen) == 2:
                break
    assert [kind for _, kind in seen] == ["message.created", "message.created"]
    with api.stream(
        "GET", f"/ai_chats/{chat['id']}/events", headers={"Last-Event-ID": seen[0][0]}, timeout=5
    ) as response:
        first_id = next(sse.events(response)).id
    assert first_id == seen[1][0]


def test_events_from_latest_send_only_what_follows(api: httpx2.Client) -> None:
    chat = create(api)
    with api.stream("GET", f"/ai_chats/{chat['id']}/events?after=latest", timeout=5) as response:
        # The response has started, so the stream's start is fixed: the chat's past is behind it.
        events = sse.events(response)
        posted = api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "after"}).json()
        data = next(events).data
    assert orjson.loads(data)["id"] == posted["id"]  # the first event is the new message, not the chat's first


def test_only_failed_or_finished_replies_can_be_retried(live_server: LiveServer, api: httpx2.Client) -> None:
    chat = create(api)
    user, pending = api.get(f"/ai_chats/{chat['id']}/messages").json()["data"]
    path = f"/ai_chats/{chat['id']}/messages/{{}}/retry"
    assert_error(api.post(path.format(pending["id"])), 409, "conflict", "only a failed or finished reply")
    assert_error(api.post(path.format(user["id"])), 409, "conflict", "user's message")
    assert_error(api.post(path.format("aimsg_nothere")), 404, "not_found")
    with live_server.client(live_server.account()) as other:
        assert_error(other.post(path.format(pending["id"])), 404, "not_found")
    with live_server.client(live_server.account(scopes="ai_chat:read")) as reader:
        assert_error(reader.post(path.format(pending["id"])), 403, "forbidden", "ai_chat:create")
    assert api.get(f"/ai_chats/{chat['id']}/messages").json()["data"] == [user, pending]  # nothing changed
    assert len(api.get(f"/ai_chats/{chat['id']}/runs").json()["data"]) == 1


def add_events(database_url: str, chat_id: str, count: int) -> None:
    """Append ``count`` events to a chat directly, in one transaction (as writers do)."""

    async def run() -> None:
        db = await database.connect(database_url, pool_size=1)
        try:
            chat = await db.fetch_one(
                sa.select(ai_chats.c.pk).where(ai_chats.c.id == sa.bindparam("id")), {"id": chat_id}
            )
            assert chat is not None
            async with db.transaction() as tx:
                for n in range(count):
                    await events.append(tx, chat["pk"], events.CHAT_UPDATED, {"n": n})
        finally:
            await db.close()

    asyncio.run(run())


def test_events_replay_flows_past_a_page(live_server: LiveServer, api: httpx2.Client) -> None:
    """A stream read from the start sends every stored event, page after page, without
    waiting between pages (it once sent 500, then waited for the next wakeup: 15 s)."""
    chat = create(api)
    add_events(live_server.database_url, chat["id"], 2_000)
    ids: list[int] = []
    started = time.monotonic()
    with api.stream("GET", f"/ai_chats/{chat['id']}/events", timeout=5) as response:
        for event in sse.events(response):
            ids.append(int(event.id))
            if len(ids) == 2_001:
                break
    elapsed = time.monotonic() - started
    assert ids == sorted(set(ids)) and len(ids) == 2_001  # the first message, then the 2,000 added
    assert elapsed < 3, f"the replay took {elapsed:.1f} s: it waited between pages"


class OpenStream(threading.Thread):
    """Reads a server-sent event stream in the background until the server ends it."""

    def __init__(self, live_server: LiveServer, account: Account, path: str) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = live_server.api + path, account.headers
        self.started, self.ended = threading.Event(), threading.Event()
        self.ended_at = 0.0
        self.cut = False  # the connection broke (say, the server stopped) instead of ending

    def run(self) -> None:
        try:
            with httpx2.stream("GET", self.url, headers=self.headers, timeout=30) as response:
                assert response.status_code == 200
                for _event in sse.events(response):
                    self.started.set()
        except httpx2.TransportError:
            self.cut = True
        self.ended_at = time.monotonic()
        self.ended.set()


def test_revoking_a_key_ends_its_open_streams(live_server: LiveServer) -> None:
    """A key revoked by the CLI (another process) ends the chat and notification streams it
    opened within a second or two; other keys' streams go on; it cannot open new ones."""
    account, other = live_server.account(), live_server.account()
    with live_server.client(account) as api, live_server.client(other) as other_api:
        chat, other_chat = create(api), create(other_api)
        streams = [
            OpenStream(live_server, account, f"/ai_chats/{chat['id']}/events"),
            OpenStream(live_server, account, "/notifications/events"),
        ]
        bystander = OpenStream(live_server, other, f"/ai_chats/{other_chat['id']}/events")
        for stream in [*streams, bystander]:
            stream.start()
            assert stream.started.wait(10)
        key_id = live_server.cli("keys", "list", "--user", account.user_id).stdout.split("\t", 1)[0]
        assert live_server.cli("keys", "revoke", key_id).stdout.strip() == f"revoked {key_id}"
        revoked_at = time.monotonic()
        for stream in streams:
            assert stream.ended.wait(5), "the revoked key's stream is still open"
            assert not stream.cut  # the server ended it
            assert stream.ended_at - revoked_at < 2.5
        assert not bystander.ended.is_set()
        assert_error(api.get(f"/ai_chats/{chat['id']}/events"), 401, "unauthorized")
        assert_error(api.get("/notifications/events"), 401, "unauthorized")
