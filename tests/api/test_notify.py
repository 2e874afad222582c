"""Notifications, badges and webhooks over HTTP, with a real server running workers.

The URL checks answer at once: those tests use the app in this process, shared by the
module (``module_app_server``); the rest need a server process with workers and streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx2
import orjson
import pytest
from standardwebhooks import Webhook

from tests.support.api import assert_error, create
from tests.support.servers import AppServer, LiveServer, Server, serving
from tests.support.sse import badge_events
from tests.support.waiting import wait_for
from tests.support.webhooks import Receiver


@pytest.fixture
def server(module_app_server: AppServer) -> Server:
    return module_app_server


@pytest.fixture(scope="module")
def working_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "AICHATS_MODEL": "test:echo",
        "AICHATS_WEBHOOKS_ALLOW_PRIVATE_URLS": "true",
        "AICHATS_WEBHOOK_RETRY_SECONDS": "[0.2, 0.2]",
    }
    with serving(new_database(), tmp_path_factory.mktemp("notify"), env) as server:
        yield server


def test_private_webhook_urls_are_refused_by_default(api: httpx2.Client) -> None:
    response = api.post("/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["notification.created"]})
    assert_error(response, 422, "invalid_request", "AICHATS_WEBHOOKS_ALLOW_PRIVATE_URLS")
    assert api.get("/webhooks").json() == {"data": []}


# Every address spelling the SSRF review tried: none may reach a non-public address.
NOT_PUBLIC = [
    "http://127.0.0.1/",
    "http://localhost:8000/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/",
    "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
    "http://224.0.0.1/",  # multicast
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://192.0.2.1/",  # documentation
    "http://2130706433/",  # decimal 127.0.0.1
    "http://0x7f.1/",  # hex and short form
    "http://0x7f000001/",
    "http://017700000001/",  # octal
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0251.0376.0251.0376/",  # octal 169.254.169.254
    "http://[::1]/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",  # site-local
    "http://[ff02::1]/",  # multicast
    "http://[2001:db8::1]/",  # documentation
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[::8.8.8.8]/",
    "http://[::ffff:0:7f00:1]/",  # IPv4-translated
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64
    "http://[2002:a9fe:a9fe::]/",  # 6to4
    "http://[2002:7f00:1::]/",
    "http://[2001::1]/",  # Teredo
]
MALFORMED = [
    "http://8.8.8.8:0/",
    "http://8.8.8.8:99999/",
    "http://8.8.8.8:abc/",
    "http://8.8.8.8:-1/",
    f"http://{'a' * 64}.example.com/",
    "http://a..b/",
    "http://.example.com/",
    "http://-a.example.com/",
    "http://a_b!.example.com/",
    "http://exa%20mple.com/",
    "http://[::1/",
    "http://[zz]/",
    "http://[1.2.3.4]/",
    "http://[fe80::1%25eth0]/",
    "http://1.2.3.4.5/",
    "http://256.1.1.1/",
    "http://1.2.3.09/",
    "http://example.123/",
    "http://exa\u0001mple.com/",
    "http://example.com/\u0001",
    "http://example.com/\u007f",
    "http://exa mple.com/",
    "http://example.com/a b",
    "http://example.com\t/",
    " http://example.com/",
    "http://example.com/\n",
    "http://example.com/\u200b",
    "http://example.com/\u2028",
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/",
    "http:///x",
    "http:/x",
    "//example.com/",
    "http://:80/",
]


@pytest.mark.parametrize("url", NOT_PUBLIC + MALFORMED)
def test_outbound_url_rule_refuses_every_spelling(api: httpx2.Client, url: str) -> None:
    """The table of issue 10: each refused with 422 in the envelope, and nothing stored."""
    response = api.post("/webhooks", json={"url": url, "events": ["notification.created"]})
    assert_error(response, 422, "invalid_request")
    assert api.get("/webhooks").json() == {"data": []}


def test_allowing_private_urls_skips_only_the_address_check(working_server: LiveServer) -> None:
    with working_server.client(working_server.account()) as api:
        for url in MALFORMED:
            response = api.post("/webhooks", json={"url": url, "events": ["notification.created"]})
            assert response.status_code == 422, (url, response.text)
        assert api.get("/webhooks").json() == {"data": []}
        for url in ("http://127.0.0.1:9/hook", "http://[::ffff:127.0.0.1]:9/", "http://0x7f.1:9/", "http://localhost/"):
            response = api.post("/webhooks", json={"url": url, "events": ["notification.created"]})
            assert response.status_code == 201, (url, response.text)


def test_reply_notifies_badges_and_delivers_a_signed_webhook(working_server: LiveServer) -> None:
    receiver = Receiver()
    receiver.fail_next = 1
    try:
        with working_server.client(working_server.account()) as api:
            hook = api.post("/webhooks", json={"url": receiver.url, "events": ["ai_chat.message.completed"]})
            assert hook.status_code == 201, hook.text
            secret, hook_id = hook.json()["secret"], hook.json()["id"]
            assert "secret" not in api.get(f"/webhooks/{hook_id}").json()

            chat = create(api, title="Ops")
            badges = wait_for(lambda: api.get("/badges").json()["total"] and api.get("/badges").json())
            assert badges == {"total": 1, "ai_chats": {chat["id"]: 1}}
            listed = api.get("/notifications").json()
            assert listed["unread_count"] == 1 and listed["data"][0]["ai_chat_id"] == chat["id"]

            assert api.post(f"/ai_chats/{chat['id']}/read").json() is True
            assert api.get("/badges").json() == {"total": 0, "ai_chats": {}}
            assert api.get("/notifications").json()["unread_count"] == 0

            delivered = wait_for(
                lambda: [
                    d for d in api.get(f"/webhooks/{hook_id}/deliveries").json()["data"] if d["status"] == "delivered"
                ]
            )
            assert [a["status_code"] for a in delivered[0]["attempts"]] == [500, 204]
            headers, body = receiver.received[-1]
            event = Webhook(secret).verify(body, headers)
            assert event["type"] == "ai_chat.message.completed"
            assert orjson.loads(body)["data"]["message"]["content"] == "You said: Hello"

            muted = create(api)
            api.patch(f"/ai_chats/{muted['id']}", json={"notification_preference": "none"})
            assert api.post("/notifications/read", json={}).json()["unread_count"] == 0
            assert api.delete(f"/webhooks/{hook_id}").json() is True
            assert_error(api.get(f"/webhooks/{hook_id}"), 404, "not_found")
    finally:
        receiver.server.shutdown()


def test_scheduler_tick_lands_prompt_and_reply(working_server: LiveServer) -> None:
    with working_server.client(working_server.account()) as api:
        chat = create(api, title="Weekly Revenue Analysis")
        body = {"prompt": "Revenue for {{date}}", "timezone": "Europe/Paris", "cron": "0 9 * * 1"}
        schedule = api.put(f"/ai_chats/{chat['id']}/schedule", json=body).json()
        tick = working_server.cli("scheduler", "tick", "--at", schedule["next_run_at"])
        assert tick.stdout.strip().startswith("fired")

        def reply_landed() -> list[dict] | None:
            messages = api.get(f"/ai_chats/{chat['id']}/messages").json()["data"]
            done = messages[-1]["status"] == "completed" and messages[-2]["source"] == "schedule"
            return messages if done else None

        messages = wait_for(reply_landed)
        local_date = schedule["next_run_at"][:10]  # 09:00 in Paris is the same date in UTC
        assert messages[-2]["content"] == f"Revenue for {local_date}"
        assert messages[-1]["content"] == f"You said: Revenue for {local_date}"
        runs = api.get(f"/ai_chats/{chat['id']}/runs").json()["data"]
        assert runs[0]["trigger"] == "schedule" and runs[0]["scheduled_for"] == schedule["next_run_at"]
        assert api.get(f"/ai_chats/{chat['id']}/schedule").json()["last_run_at"] == schedule["next_run_at"]


def test_notifications_stream_follows_notifications_and_badges(working_server: LiveServer) -> None:
    account = working_server.account()
    with working_server.client(account) as api, working_server.client(account) as watcher:
        with watcher.stream("GET", "/notifications/events", timeout=20) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            events = badge_events(response)

            def next_state() -> dict:
                """The next event, woken by the change (keepalives are 15 s apart; polls 1 s on SQLite)."""
                started = time.monotonic()
                state = next(events)
                assert time.monotonic() - started < 5
                return state

            assert next_state() == {"unread_count": 0, "total": 0, "ai_chats": {}, "latest_notification_id": None}

            chat = create(api, title="Live")  # its reply notifies
            state = next_state()
            latest = api.get("/notifications").json()["data"][0]
            assert state == {
                "unread_count": 1,
                "total": 1,
                "ai_chats": {chat["id"]: 1},
                "latest_notification_id": latest["id"],
            }
            assert latest["ai_chat_id"] == chat["id"]

            assert api.post(f"/ai_chats/{chat['id']}/read").json() is True
            read = next_state()
            assert read == {"unread_count": 0, "total": 0, "ai_chats": {}, "latest_notification_id": latest["id"]}

            api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": "again"})
            second = next_state()
            assert second["unread_count"] == 1 and second["ai_chats"] == {chat["id"]: 1}
            assert second["latest_notification_id"] != latest["id"]
            assert api.post("/notifications/read", json={}).json() == {"marked_read": 1, "unread_count": 0}
            assert next_state()["unread_count"] == 0


def test_notifications_stream_needs_read_scope(server: Server) -> None:
    with server.client(server.account(scopes="ai_chat:create")) as writer:
        assert_error(writer.get("/notifications/events"), 403, "forbidden", "ai_chat:read")
    with server.client() as anonymous:
        assert_error(anonymous.get("/notifications/events"), 401, "unauthorized")


def test_a_deleted_chats_notifications_leave_the_bell_and_the_list(working_server: LiveServer) -> None:
    """The bell (``unread_count``), the badges' ``total``, the list and the stream agree once a
    chat is deleted: its notifications no longer count, and are no longer listed."""
    with working_server.client(working_server.account()) as api:
        kept, deleted = create(api, title="Kept"), create(api, title="Deleted")
        wait_for(lambda: api.get("/badges").json()["total"] == 2)
        assert api.get("/notifications").json()["unread_count"] == 2

        assert api.delete(f"/ai_chats/{deleted['id']}").json() is True
        listed = api.get("/notifications").json()
        assert listed["unread_count"] == 1 == api.get("/badges").json()["total"]
        assert [n["ai_chat_id"] for n in listed["data"]] == [kept["id"]]
        with api.stream("GET", "/notifications/events", timeout=10) as response:
            state = next(badge_events(response))
        assert state == {
            "unread_count": 1,
            "total": 1,
            "ai_chats": {kept["id"]: 1},
            "latest_notification_id": listed["data"][0]["id"],
        }
        assert api.post("/notifications/read", json={}).json() == {"marked_read": 1, "unread_count": 0}
