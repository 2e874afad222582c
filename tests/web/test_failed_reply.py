"""A failed reply is shown with its error and a Retry that completes it, in the browser."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.servers import LiveServer, serving
from tests.web.conftest import new_account, screenshot, sign_in


@pytest.fixture(scope="module")
def flaky_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A model that fails its first two calls: within a one-second budget the first reply
    fails; the retry's call is the third, which works. Its own database: its worker must
    not spend those calls on runs that other tests left queued."""
    env = {"AICHATS_MODEL": "test:flaky-2", "AICHATS_MODEL_TIMEOUT_SECONDS": "1"}
    with serving(new_database(), tmp_path_factory.mktemp("web-flaky"), env) as server:
        yield server


def test_failed_reply_notifies_shows_its_error_and_retries(flaky_server: LiveServer, page: Page) -> None:
    account = new_account(flaky_server)
    with flaky_server.client(account) as api:
        chat = api.post("/ai_chats", json={"message_text": "Hello", "title": "Flaky"}).json()
    sign_in(page, flaky_server, account.key)
    # The failure notifies (the chat is not open); "Mark all read" clears the bell.
    expect(page.locator("#bell-count")).to_have_text("1", timeout=15_000)
    page.get_by_role("button", name="Notifications, 1 unread").click()
    expect(page.locator("#notification-list a.unread")).to_contain_text("Flaky")
    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator("#bell-count")).to_be_hidden()
    expect(page.locator("#notification-list a.unread")).to_have_count(0)
    expect(page.locator("#notification-list a")).to_contain_text("Flaky")
    page.locator("#notification-list a").click()
    page.wait_for_url(re.compile(f"#/chats/{chat['id']}"))
    reply = page.locator(".msg-assistant")
    expect(reply).to_have_attribute("data-status", "failed", timeout=15_000)
    expect(reply.locator(".msg-error")).to_contain_text("flaky")
    screenshot(page, "failed-reply")
    reply.get_by_role("button", name="Retry").click()
    expect(reply).to_have_attribute("data-status", "completed", timeout=15_000)
    expect(reply.locator(".msg-body")).to_have_text("You said: Hello")
    expect(reply.locator(".msg-error")).to_have_count(0)
    expect(page.locator(".msg")).to_have_count(2)  # the same reply, not a second one
