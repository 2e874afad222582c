"""Notifications and badges for replies (never in muted chats), and signed webhooks."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from aichats import outbound
from aichats.errors import Invalid
from aichats.observability import metrics
from aichats.services import chats, notifications, users, webhooks
from aichats.services.chats import ChatChanges, NewChat, NotificationPreference
from aichats.services.messages import NewMessage, create_chat
from aichats.services.pagination import PageRequest
from aichats.storage.database import Database
from aichats.storage.schema import webhook_deliveries
from tests.runs.test_worker import drain, make_worker
from tests.support.webhooks import Receiver

pytestmark = pytest.mark.anyio


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


async def chat_with_reply(db: Database, muted: bool = False, **worker: Any) -> dict[str, Any]:
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage("status report"), title="Ops"))
    if muted:
        await chats.update_chat(
            db, user_id, chat["id"], ChatChanges(notification_preference=NotificationPreference.none)
        )
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


async def test_private_urls_are_refused_unless_allowed() -> None:
    refuse, allow = webhooks.policy(allow_private=False), webhooks.policy(allow_private=True)
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x", "http://[::1]/x"):
        with pytest.raises(Invalid, match="AICHATS_WEBHOOKS_ALLOW_PRIVATE_URLS=true"):
            await outbound.check_url(url, refuse)
        assert (await outbound.check_url(url, allow)).url == url
    with pytest.raises(Invalid, match="http"):
        await outbound.check_url("ftp://example.com/x", allow)


async def hooked_reply(db: Database, receiver: Receiver, *events: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A user with a webhook on ``events`` to ``receiver``, and a chat of theirs whose reply
    was written: (user id, webhook, chat)."""
    user_id = await users.create_user(db)
    data = webhooks.NewWebhook(url=receiver.url, events=events)
    hook = await webhooks.create_webhook(db, user_id, data, allow_private=True)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage("hi"), title="Hooks"))
    await drain(make_worker(db))
    return user_id, hook, chat


async def deliver_all(db: Database) -> None:
    """Every delivery due, retries at once (two of them), until none is left."""
    async with webhooks.sender(allow_private=True) as http:
        while await webhooks.deliver_one(db, http, retry_seconds=[0.0, 0.0]):
            pass


async def test_signed_delivery_and_redelivery(db: Database, receiver: Receiver) -> None:
    user_id, hook, chat = await hooked_reply(db, receiver, "ai_chat.message.completed", "notification.created")
    assert hook["secret"].startswith("whsec_")
    receiver.fail_next = 1
    before = attempts_counted()
    await deliver_all(db)
    types = [orjson.loads(body)["type"] for _, body in receiver.received]
    assert sorted(set(types)) == ["ai_chat.message.completed", "notification.created"]
    assert len(types) == 3  # one of the two was refused once, then redelivered
    assert counted_since(before) == {"delivered": 2, "retrying": 1, "failed": 0}  # aichats_webhook_attempts_total

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


def attempts_counted() -> dict[str, float]:
    """``aichats_webhook_attempts_total`` in this process, by result."""
    return {result: metrics.WEBHOOK_ATTEMPTS.series.get((result,), [0])[0] for result in RESULTS}


def counted_since(before: dict[str, float]) -> dict[str, float]:
    now = attempts_counted()
    return {result: now[result] - before[result] for result in RESULTS}


RESULTS = ("delivered", "retrying", "failed")


async def test_a_delivery_that_keeps_failing_is_counted_until_it_fails_for_good(
    db: Database, receiver: Receiver
) -> None:
    user_id, hook, _ = await hooked_reply(db, receiver, "ai_chat.message.completed")
    receiver.fail_next = 10
    before = attempts_counted()
    await deliver_all(db)
    assert len(receiver.received) == 3  # the first attempt and two retries
    assert counted_since(before) == {"delivered": 0, "retrying": 2, "failed": 1}
    [delivery] = await webhooks.deliveries(db, (await webhooks.get_webhook(db, user_id, hook["id"]))["pk"])
    assert delivery["status"] == "failed" and len(delivery["attempts"]) == 3


async def test_muted_chats_send_no_notification_webhooks(db: Database, receiver: Receiver) -> None:
    user_id = await users.create_user(db)
    data = webhooks.NewWebhook(url=receiver.url, events=("notification.created",))
    await webhooks.create_webhook(db, user_id, data, allow_private=True)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage("quiet")))
    await chats.update_chat(db, user_id, chat["id"], ChatChanges(notification_preference=NotificationPreference.none))
    await drain(make_worker(db))
    async with webhooks.sender(allow_private=True) as http:
        while await webhooks.deliver_one(db, http, retry_seconds=[]):
            pass
    assert receiver.received == []


async def hook_with_stored_url(db: Database, url: str) -> tuple[str, str]:
    """A webhook row written straight to the database (as old data could be) and one due delivery."""
    from aichats import ids
    from aichats.storage.schema import webhooks as webhooks_table

    user_id = await users.create_user(db)
    hook_id = ids.new_id("wh")
    async with db.transaction() as tx:
        await tx.execute(
            sa.insert(webhooks_table).values(
                id=hook_id, user_id=user_id, url=url, events="notification.created", secret="whsec_" + "A" * 32,
                created_at=1,
            )
        )  # fmt: skip
        await webhooks.enqueue(tx, user_id, "notification.created", {"n": 1})
    return user_id, hook_id


@pytest.mark.parametrize(
    "url", ["http://exa\u0001mple.com/hook", "http://127.0.0.1:99999/", "http://a..b/", "http://[::1/", "gopher://x/"]
)
async def test_a_bad_stored_url_fails_each_attempt_then_stops(db: Database, url: str) -> None:
    """Any exception in the sender ends the attempt as failed, counted: never re-claimed forever."""
    user_id, hook_id = await hook_with_stored_url(db, url)
    retries = [0.0] * 7  # eight attempts in all
    async with webhooks.sender(allow_private=True) as http:
        sends = 0
        while await webhooks.deliver_one(db, http, retry_seconds=retries):
            sends += 1
            assert sends <= 8
    row = await webhooks.get_webhook(db, user_id, hook_id)
    [delivery] = await webhooks.deliveries(db, row["pk"])
    assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
    assert len(delivery["attempts"]) == 8 and sends == 8
    assert all(a["error"] and a["status_code"] is None for a in delivery["attempts"])


async def test_an_exhausted_pending_delivery_is_failed_without_sending(db: Database, receiver: Receiver) -> None:
    """Old rows re-claimed past the limit (10 attempts against 8) end failed, nothing sent."""
    user_id, hook_id = await hook_with_stored_url(db, receiver.url)
    async with db.transaction() as tx:
        await tx.execute(sa.update(webhook_deliveries).values(attempts=10))
    async with webhooks.sender(allow_private=True) as http:
        assert await webhooks.deliver_one(db, http, retry_seconds=[0.0] * 7)
        assert not await webhooks.deliver_one(db, http, retry_seconds=[0.0] * 7)
    row = await webhooks.get_webhook(db, user_id, hook_id)
    [delivery] = await webhooks.deliveries(db, row["pk"])
    assert delivery["status"] == "failed" and receiver.received == []


async def test_the_sender_connects_to_the_address_it_checked(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name public for the checks, then loopback, must never reach loopback."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("rebind.test", b"rebind.test"):
            return real(host, port, *args, **kwargs)
        address = "8.8.8.8" if len(answers) < 2 else "127.0.0.1"  # public to the checks, loopback after
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 2.0)  # 8.8.8.8 may be unreachable or silent here
    user_id = await users.create_user(db)
    port = receiver.server.server_address[1]
    data = webhooks.NewWebhook(url=f"http://rebind.test:{port}/hook", events=("notification.created",))
    hook = await webhooks.create_webhook(db, user_id, data, allow_private=False)
    async with db.transaction() as tx:
        await webhooks.enqueue(tx, user_id, "notification.created", {"n": 1})
    async with webhooks.sender(allow_private=False) as http:
        assert await webhooks.deliver_one(db, http, retry_seconds=[])
    assert receiver.received == []  # the loopback answer was never used
    row = await webhooks.get_webhook(db, user_id, hook["id"])
    [delivery] = await webhooks.deliveries(db, row["pk"])
    assert delivery["status"] == "failed" and delivery["attempts"][0]["status_code"] is None


async def test_unknown_events_are_refused(db: Database) -> None:
    user_id = await users.create_user(db)
    with pytest.raises(Invalid, match="unknown event"):
        await webhooks.create_webhook(
            db, user_id, webhooks.NewWebhook(url="http://127.0.0.1/x", events=("chat.exploded",)), allow_private=True
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


async def test_a_reply_that_lands_after_its_chat_was_deleted_is_not_counted(db: Database) -> None:
    """A reply running while its chat is deleted still notifies when it lands; the bell, the
    list and mark-all-read leave that notification out, as the badges do."""
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage("hi"), title="Gone"))
    await chats.delete_chat(db, user_id, chat["id"])
    async with db.transaction() as tx:  # what the worker does once the reply completes
        await notifications.notify(tx, chat, kind="ai_chat.reply", title="Gone", body="late reply")
    stored = (
        sa.select(sa.func.count().label("n"))
        .where(sa.column("user_id") == user_id)
        .select_from(sa.table("notifications"))
    )
    assert (await db.fetch_one(stored))["n"] == 1  # type: ignore[index]
    page, unread = await notifications.list_notifications(db, user_id, PageRequest())
    assert (page.items, unread) == ([], 0)
    assert await notifications.badges(db, user_id) == {}
    assert await notifications.mark_read(db, user_id, None) == 0
