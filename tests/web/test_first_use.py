"""What a first-time user ran into (issue 10, item 18): the bell's panel on a phone, Escape on
the bell, "1 messages", a 404 in the console for every chat without a schedule, relative
times that never moved, and a phone header that took 40% of the screen.

Against the shared server with no agent: no reply lands while these tests look.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.servers import LiveServer
from tests.web.conftest import new_account, sign_in

PHONE = {"width": 375, "height": 667}


def test_the_notification_panel_fits_a_phone_and_escape_on_the_bell_closes_it(
    live_server: LiveServer, page: Page
) -> None:
    account = new_account(live_server)
    page.set_viewport_size(PHONE)
    sign_in(page, live_server, account.key)
    bell = page.get_by_role("button", name="Notifications")
    panel = page.locator("#notification-panel")
    bell.click()
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("No notifications yet.")
    box = panel.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    assert box["width"] >= 300, box  # still a usable list, not squeezed

    # The click left the focus on the bell: Escape closes the panel there too.
    expect(bell).to_be_focused()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(bell).to_have_attribute("aria-expanded", "false")
    expect(bell).to_be_focused()
    # And from inside the panel, focus goes back to the bell.
    page.keyboard.press("Enter")
    expect(panel).to_be_visible()
    page.get_by_role("button", name="Mark all read").focus()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(bell).to_be_focused()


def test_counts_are_singular_or_plural(live_server: LiveServer, page: Page) -> None:
    account = new_account(live_server)
    with live_server.client(account) as api:
        one = api.post("/ai_chats", json={"message_text": "only question", "title": "One"}).json()
        two = api.post("/ai_chats", json={"message_text": "first question", "title": "Two"}).json()
        api.post(f"/ai_chats/{two['id']}/messages", json={"message_text": "second question"})
    assert one["message_count"] == 1
    sign_in(page, live_server, account.key)
    page.goto(f"{live_server.root}/#/chats/{one['id']}")
    expect(page.get_by_test_id("chat-usage")).to_have_text("1 message · 0 tokens")
    page.goto(f"{live_server.root}/#/chats/{two['id']}")
    expect(page.get_by_test_id("chat-usage")).to_have_text("2 messages · 0 tokens")


def test_a_chat_without_a_schedule_asks_for_none(live_server: LiveServer, page: Page) -> None:
    """Opening a chat asks only for what exists: no 404 (which the browser logs as a console
    error), while a chat with an active schedule still shows it."""
    account = new_account(live_server)
    with live_server.client(account) as api:
        plain = api.post("/ai_chats", json={"message_text": "hi", "title": "Plain"}).json()
        scheduled = api.post("/ai_chats", json={"message_text": "hi", "title": "Scheduled"}).json()
        saved = api.put(
            f"/ai_chats/{scheduled['id']}/schedule",
            json={"prompt": "Report", "timezone": "Europe/Paris", "cron": "0 9 * * 1"},
        )
        assert saved.status_code == 200, saved.text
    sign_in(page, live_server, account.key)  # (the sign-in page's own 401 is not counted)
    console: list[str] = []
    failed: list[str] = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.on("response", lambda reply: failed.append(f"{reply.status} {reply.url}") if reply.status >= 400 else None)
    page.goto(f"{live_server.root}/#/chats/{plain['id']}")
    expect(page.get_by_role("heading", name="Plain")).to_be_visible()
    expect(page.get_by_role("button", name="Schedule")).to_be_enabled()  # the chat is loaded
    expect(page.get_by_test_id("chat-schedule")).to_have_count(0)
    page.goto(f"{live_server.root}/#/chats/{scheduled['id']}")
    expect(page.get_by_test_id("chat-schedule")).to_have_text("Scheduled: At 09:00 on Monday (Europe/Paris)")
    assert failed == [] and console == [], (failed, console)


def test_relative_times_stay_current(live_server: LiveServer, page: Page) -> None:
    account = new_account(live_server)
    with live_server.client(account) as api:
        chat = api.post("/ai_chats", json={"message_text": "What time is it?", "title": "Clock"}).json()
    page.clock.install()
    sign_in(page, live_server, account.key)
    page.goto(f"{live_server.root}/#/chats/{chat['id']}")
    times = page.locator(f'.msg time, #chat-list a[data-chat-id="{chat["id"]}"] time')
    expect(times).to_have_count(3)  # the question, its pending reply, the list's entry
    expect(times).to_have_text(["now"] * 3)
    page.clock.run_for(5_000)  # a few seconds on: the same word everywhere, not "5 seconds ago"
    expect(times).to_have_text(["now"] * 3)
    page.clock.run_for(2 * 60_000)
    expect(times).to_have_text(["2 minutes ago"] * 3)
    page.clock.run_for(60 * 60_000)
    expect(times).to_have_text(["1 hour ago"] * 3)


def test_the_phone_header_takes_a_small_share_of_the_screen(live_server: LiveServer, page: Page) -> None:
    account = new_account(live_server)
    with live_server.client(account) as api:
        chat = api.post(
            "/ai_chats", json={"message_text": "hi", "title": "A rather long title for a narrow phone screen"}
        ).json()
    page.set_viewport_size(PHONE)
    sign_in(page, live_server, account.key)
    limit = 0.15 * PHONE["height"]

    def bottom(selector: str) -> float:
        return page.evaluate(f"document.querySelector({selector!r}).getBoundingClientRect().bottom")

    # The chat list: the top bar, then "New chat" and the search.
    expect(page.get_by_label("Search chats by title")).to_be_visible()
    assert bottom(".sidebar-tools") <= limit, bottom(".sidebar-tools")
    # A conversation: the top bar, then the chat's head (back, title, what it is).
    page.locator(f'#chat-list a[data-chat-id="{chat["id"]}"]').click()
    expect(page.get_by_role("heading", name=re.compile("A rather long title"))).to_be_visible()
    expect(page.get_by_role("link", name="← Chats")).to_be_visible()
    expect(page.get_by_test_id("chat-usage")).to_be_visible()
    assert bottom(".view-head") <= limit, bottom(".view-head")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # The chat's actions are one tap away.
    page.get_by_role("button", name="Chat actions").click()
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("dialog")).to_be_visible()
