"""Stop and Regenerate, in Chromium, against ``aichats serve`` with the slow test model.

``test:slow`` echoes the user's words at 20 ms a word: a long question makes a reply that
streams for seconds, for Stop to catch mid-way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.servers import LiveServer, serving
from tests.web.conftest import new_account, screenshot, sign_in

WORDS = " ".join(f"w{n}" for n in range(150))  # 3 s of streaming
LONG = " ".join(f"w{n}" for n in range(500))  # 10 s: time to sign in and open the chat while it streams


@pytest.fixture(scope="module")
def slow_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"AICHATS_MODEL": "test:slow", "AICHATS_WORKERS": "1", "AICHATS_MAX_OUTPUT_TOKENS": "1000"}
    with serving(new_database(), tmp_path_factory.mktemp("web-stop"), env) as server:
        yield server


def test_stop_keeps_what_was_written_and_regenerate_writes_it_again(slow_server: LiveServer, page: Page) -> None:
    account = new_account(slow_server)
    sign_in(page, slow_server, account.key)
    page.get_by_label("First message").fill(WORDS)
    page.get_by_label("First message").press("Enter")
    page.wait_for_url(re.compile(r"#/chats/aich_"))
    chat_id = page.url.rsplit("/", 1)[1]
    reply = page.locator(".msg-assistant")
    stop = page.get_by_role("button", name="Stop", exact=True)

    # While the reply streams, the composer offers Stop.
    expect(reply.locator(".msg-body")).to_contain_text("w5")
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(stop).to_be_visible()
    stop.click()
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.get_by_test_id("stopped")).to_have_text("Stopped")
    expect(stop).to_be_hidden()
    with slow_server.client(account) as api:
        stopped = api.get(f"/ai_chats/{chat_id}/messages").json()["data"][1]
    assert stopped["status"] == "cancelled"
    assert stopped["content"].startswith("You said: w0 w1") and len(stopped["content"]) < len(f"You said: {WORDS}")
    # What it wrote stays, and nothing more comes.
    expect(reply.locator(".msg-body")).to_have_text(stopped["content"])
    page.wait_for_timeout(300)
    expect(reply.locator(".msg-body")).to_have_text(stopped["content"])
    screenshot(page, "stopped-reply")

    # Regenerate writes the reply again, in its place.
    reply.get_by_role("button", name="Regenerate").click()
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reply.get_by_test_id("stopped")).to_have_count(0)
    expect(reply).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(reply.locator(".msg-body")).to_have_text(f"You said: {WORDS}")
    expect(page.locator(".msg")).to_have_count(2)

    # A completed last reply can be written again too.
    reply.get_by_role("button", name="Regenerate").click()
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(stop).to_be_visible()
    expect(reply).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(reply.locator(".msg-body")).to_have_text(f"You said: {WORDS}")
    with slow_server.client(account) as api:
        messages = api.get(f"/ai_chats/{chat_id}/messages").json()["data"]
    assert [m["status"] for m in messages] == ["completed", "completed"]

    # Only the chat's last reply offers it: a new question takes it away from this one.
    page.get_by_label("Message", exact=True).fill("short")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator(".msg")).to_have_count(4)
    expect(reply.get_by_role("button", name="Regenerate")).to_have_count(0)
    expect(page.locator(".msg-assistant").last).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(page.get_by_role("button", name="Regenerate")).to_have_count(1)
    assert page.errors == []  # type: ignore[attr-defined]


def test_stop_also_stops_a_reply_still_queued(slow_server: LiveServer, page: Page) -> None:
    """Two questions in a row: the second reply waits behind the first. Stop stops both."""
    account = new_account(slow_server)
    with slow_server.client(account) as api:
        chat = api.post("/ai_chats", json={"message_text": LONG, "title": "Two"}).json()
        api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": LONG})
    sign_in(page, slow_server, account.key)
    page.goto(f"{slow_server.root}/#/chats/{chat['id']}")
    replies = page.locator(".msg-assistant")
    expect(replies).to_have_count(2)
    expect(replies.first).to_have_attribute("data-status", "streaming")
    expect(replies.last).to_have_attribute("data-status", "pending")
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(replies.first).to_have_attribute("data-status", "cancelled")
    expect(replies.last).to_have_attribute("data-status", "cancelled")
    expect(replies.last.locator(".msg-body")).to_have_text("")
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_hidden()
    # Only the last one can be written again.
    expect(replies.first.get_by_role("button", name="Regenerate")).to_have_count(0)
    expect(replies.last.get_by_role("button", name="Regenerate")).to_be_visible()
