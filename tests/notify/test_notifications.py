"""Notifications and badges for replies (never in muted chats), and signed webhooks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import orjson
import pytest
from standardwebhooks import Webhook

from aichats.errors import Invalid
from aichats.services import chats, notifications, users, webhooks
from aichats.services.chats import ChatCreate, ChatUpdate
from aichats.services.pagination import PageRequest
from aichats.storage.database import Database
from tests.runs.test_worker import drain, make_worker

pytestmark = pytest.mark.anyio


class Receiver:
    """A real HTTP server on loopback that records webhook requests; can fail on demand."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = receiver.fail_next > 0
                receiver.fail_next -= failing
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


async def chat_with_reply(db: Database, muted: bool = False, **worker: Any) -> dict[str, Any]:
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        chat = await chats.create_chat(tx, user_id, ChatCreate(message_text="status report", title="Ops"))
    if muted:
        await chats.update_chat(db, user_id, chat["id"], ChatUpdate(notification_preference="none"))
    await drain(make_worker(db, **worker))
    return chat


async def test_replies_notify_and_badge_unless_muted(db: Database) -> None:
    chat = await chat_with_reply(db)
    page, unread = await notifications.list_notifications(db, chat["user_id"], PageRequest())
    assert unread == 1 and [n["kind"] for n in page.items] == ["ai_chat.reply"]
    note = notifications.notification_json(page.items[0])
    assert note["ai_chat_id"] == chat["id"] and note["title"] == "Ops" and note["body"] == "You said: status report"
    assert await notifications.badges(db, chat["user_id"]) == {chat["id"]: 1}

    await notifications.read_chat(db, chat["user_id"], chat["pk"])
    assert await notifications.badges(db, chat["user_id"]) == {}
    assert (await notifications.list_notifications(db, chat["user_id"], PageRequest()))[1] == 0

    muted = await chat_with_reply(db, muted=True)
    assert (await notifications.list_notifications(db, muted["user_id"], PageRequest()))[0].items == []
    assert await notifications.badges(db, muted["user_id"]) == {}


async def test_mark_read_by_id_and_all(db: Database) -> None:
    chat = await chat_with_reply(db)
    page, _ = await notifications.list_notifications(db, chat["user_id"], PageRequest())
    assert await notifications.mark_read(db, chat["user_id"], [page.items[0]["id"], "ntf_other"]) == 1
    assert await notifications.badges(db, chat["user_id"]) == {}
    assert await notifications.mark_read(db, chat["user_id"], None) == 0


def test_private_urls_are_refused_unless_allowed() -> None:
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x", "http://[::1]/x"):
        with pytest.raises(Invalid, match="private or loopback"):
            webhooks.check_url(url, allow_private=False)
        assert webhooks.check_url(url, allow_private=True) == url
    with pytest.raises(Invalid, match="http"):
        webhooks.check_url("ftp://example.com/x", allow_private=True)


async def test_signed_delivery_and_redelivery(db: Database, receiver: Receiver) -> None:
    user_id = await users.create_user(db)
    data = webhooks.WebhookInput(url=receiver.url, events=["ai_chat.message.completed", "notification.created"])
    hook = await webhooks.create_webhook(db, user_id, data, allow_private=True)
    assert hook["secret"].startswith("whsec_")
    async with db.transaction() as tx:
        chat = await chats.create_chat(tx, user_id, ChatCreate(message_text="hi", title="Hooks"))
    await drain(make_worker(db))

    receiver.fail_next = 1
    async with httpx2.AsyncClient() as http:
        while await webhooks.deliver_one(db, http, retry_seconds=[0.0, 0.0], allow_private=True):
            pass
    types = [orjson.loads(body)["type"] for _, body in receiver.received]
    assert sorted(set(types)) == ["ai_chat.message.completed", "notification.created"]
    assert len(types) == 3  # one of the two was refused once, then redelivered

    for headers, body in receiver.received:
        verified = Webhook(hook["secret"]).verify(body, headers)
        assert verified["data"]  # the signature holds for the exact bytes sent
    completed = next(orjson.loads(b) for _, b in receiver.received if b"message.completed" in b)
    assert (
        completed["data"]["message"]["content"] == "You said: hi" and completed["data"]["ai_chat"]["id"] == chat["id"]
    )

    row = await webhooks.get_webhook(db, user_id, hook["id"])
    log = await webhooks.deliveries(db, row["pk"])
    assert {d["status"] for d in log} == {"delivered"}
    assert sorted(len(d["attempts"]) for d in log) == [1, 2]
    retried = next(d for d in log if len(d["attempts"]) == 2)
    assert retried["attempts"][0]["status_code"] == 500 and retried["attempts"][1]["status_code"] == 204


async def test_muted_chats_send_no_notification_webhooks(db: Database, receiver: Receiver) -> None:
    user_id = await users.create_user(db)
    data = webhooks.WebhookInput(url=receiver.url, events=["notification.created"])
    await webhooks.create_webhook(db, user_id, data, allow_private=True)
    async with db.transaction() as tx:
        chat = await chats.create_chat(tx, user_id, ChatCreate(message_text="quiet"))
    await chats.update_chat(db, user_id, chat["id"], ChatUpdate(notification_preference="none"))
    await drain(make_worker(db))
    async with httpx2.AsyncClient() as http:
        while await webhooks.deliver_one(db, http, retry_seconds=[], allow_private=True):
            pass
    assert receiver.received == []


async def test_unknown_events_are_refused(db: Database) -> None:
    user_id = await users.create_user(db)
    with pytest.raises(Invalid, match="unknown event"):
        await webhooks.create_webhook(
            db, user_id, webhooks.WebhookInput(url="http://127.0.0.1/x", events=["chat.exploded"]), allow_private=True
        )


async def test_a_deactivated_schedule_notifies(db: Database) -> None:
    from aichats.scheduling import scheduler
    from tests.scheduling.test_scheduler import ms, scheduled_chat

    start = ms(2026, 12, 1, 12)
    chat = await scheduled_chat(db, start, interval_seconds=60)
    worker = make_worker(db, model="test:fail", schedule_max_failures=2)
    for n in (1, 2):
        await scheduler.tick(db, max_in_flight=1000, now=start + n * 60_000 + 1)
        await drain(worker)
    page, _ = await notifications.list_notifications(db, chat["user_id"], PageRequest(first=10))
    kinds = [n["kind"] for n in page.items]
    assert kinds[0] == "ai_chat.schedule.deactivated" and "turned off" in page.items[0]["body"]
