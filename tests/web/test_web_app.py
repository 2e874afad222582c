"""The web app, in Chromium, against ``aichats serve`` with its built-in local model.

One long journey (the issue's own list, in order) and shorter tests for what it does not
cross: attachments, phone width, keyboard use, and that the page never reaches beyond
the server. (The chat list and escaping are in ``test_chat_list.py``.)
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx2
from playwright.sync_api import Page, expect

from tests.support.servers import LiveServer
from tests.support.waiting import wait_for
from tests.web.conftest import new_account, screenshot, sign_in

STREAM_WATCH = """
() => new Promise((resolve) => {
  // Every text the reply shows while it is written, until it is complete.
  const seen = [];
  const look = () => {
    const reply = document.querySelector(".msg-assistant");
    if (reply) {
      const text = reply.querySelector(".msg-body").textContent.trim();
      if (text && seen.at(-1) !== text) seen.push(text);
      if (reply.dataset.status === "completed" || reply.dataset.status === "failed") {
        return resolve({ seen, status: reply.dataset.status });
      }
    }
    requestAnimationFrame(look);
  };
  look();
})
"""


RENDERED = """
async (text) => {
  const { renderMarkdown } = await import("/static/markdown.js");
  const body = document.createElement("div");
  renderMarkdown(body, text);
  return body.textContent.trim();
}
"""


def eventually(page: Page, check: Callable[[], bool], seconds: float = 15) -> None:
    """Wait for ``check`` with Playwright's own wait, which keeps the page's event loop turning."""
    wait_for(check, seconds, check.__name__, interval=0.1, sleep=lambda s: page.wait_for_timeout(s * 1000))


def test_sign_in_chat_schedule_notify_delete(web_server: LiveServer, page: Page) -> None:
    account = new_account(web_server)
    api = web_server.client(account)

    # Sign in: a wrong key is refused with a clear message, the right one is kept out of page reach.
    page.goto(web_server.root + "/")
    screenshot(page, "sign-in")
    page.get_by_label("API key").fill("ak_not_a_real_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile("not valid"))
    sign_in(page, web_server, account.key)
    cookie = next(c for c in page.context.cookies() if c["name"] == "aichats_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    page_storage = page.evaluate("document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert account.key not in page_storage

    # A new chat; the local model's reply streams in, token by token.
    page.get_by_label("First message").fill("Write three sentences about the sea.")
    page.get_by_label("First message").press("Enter")
    page.wait_for_url(re.compile(r"#/chats/aich_"))
    watched = page.evaluate(STREAM_WATCH)
    chat_id = page.url.rsplit("/", 1)[1]
    assert watched["status"] == "completed"
    messages = api.get(f"/ai_chats/{chat_id}/messages").json()["data"]
    reply = messages[1]
    assert reply["status"] == "completed" and reply["model"] == "local:smollm2-135m"
    # The reply shows as Markdown (what a model writes; test_markdown.py tests the rendering, and
    # that no text is lost as it streams): the page's own rendering of the API's text.
    rendered = page.evaluate(RENDERED, reply["content"])
    partial = [text for text in watched["seen"] if text != rendered]
    assert len(partial) >= 2, f"the reply did not stream in: {watched['seen']}"
    expect(page.locator(".msg-assistant .msg-body")).to_have_text(rendered)
    # The page says plainly that this is a small demo model, and how an operator switches.
    expect(page.get_by_test_id("demo-model")).to_have_text("demo model")
    expect(page.get_by_test_id("demo-note")).to_contain_text("built-in demo model")
    expect(page.get_by_test_id("demo-note")).to_contain_text("AICHATS_MODEL=openai:<model>")

    # Token usage: per message and per chat, as the API counts it.
    usage = reply["usage"]
    expect(page.locator(".msg-assistant .usage")).to_contain_text(f"{usage['input_tokens']} in")
    chat = api.get(f"/ai_chats/{chat_id}").json()
    expect(page.get_by_test_id("chat-usage")).to_have_text(f"2 messages · {chat['blended_token_usage']} tokens")

    # Rename.
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Title", exact=True).fill("Weekly Revenue Analysis")
    page.get_by_role("dialog").get_by_role("button", name="Rename").click()
    expect(page.get_by_role("heading", name="Weekly Revenue Analysis")).to_be_visible()
    expect(page.locator(f'#chat-list a[data-chat-id="{chat_id}"]')).to_contain_text("Weekly Revenue Analysis")
    assert api.get(f"/ai_chats/{chat_id}").json()["title"] == "Weekly Revenue Analysis"

    # Mute shows in the list; unmute (so the scheduled reply below notifies).
    page.get_by_role("button", name="Mute", exact=True).click()
    expect(page.locator(f'#chat-list a[data-chat-id="{chat_id}"] .muted-tag')).to_have_text("Muted")
    assert api.get(f"/ai_chats/{chat_id}").json()["notification_preference"] == "none"
    page.get_by_role("button", name="Unmute").click()
    expect(page.locator(f'#chat-list a[data-chat-id="{chat_id}"] .muted-tag')).to_have_count(0)
    assert api.get(f"/ai_chats/{chat_id}").json()["notification_preference"] == "all"
    screenshot(page, "conversation")

    # A weekly schedule: preset, the browser's time zone, and its times shown before saving.
    page.get_by_role("button", name="Schedule").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Time zone")).to_have_value("Europe/Paris")
    dialog.get_by_label("Repeat").select_option(label="Every Monday")
    dialog.get_by_label("At (local time)").fill("09:00")
    dialog.get_by_label("Prompt").fill("Summarise last week's revenue ({{date}})")
    expect(dialog.locator("#schedule-preview strong")).to_have_text("At 09:00 on Monday (Europe/Paris)")
    expect(dialog.locator("#schedule-preview li")).to_have_count(5)
    screenshot(page, "schedule")
    assert api.get(f"/ai_chats/{chat_id}/schedule").status_code == 404  # nothing saved yet
    dialog.get_by_role("button", name="Save schedule").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    schedule = api.get(f"/ai_chats/{chat_id}/schedule").json()
    assert (schedule["cron"], schedule["timezone"], schedule["active"]) == ("0 9 * * 1", "Europe/Paris", True)
    expect(page.get_by_test_id("chat-schedule")).to_have_text("Scheduled: At 09:00 on Monday (Europe/Paris)")

    # Away from the chat, the schedule fires; the badge and the notification arrive live.
    page.get_by_role("link", name="New chat").click()
    web_server.cli("scheduler", "tick", "--at", schedule["next_run_at"])
    badge = page.locator(f'#chat-list [data-badge="{chat_id}"]')
    expect(badge).to_have_text("1 unread", timeout=60_000)
    expect(page.locator("#bell-count")).to_have_text("1")
    page.get_by_role("button", name="Notifications, 1 unread").click()
    notification = page.locator("#notification-list a.unread")
    expect(notification).to_contain_text("Weekly Revenue Analysis")
    screenshot(page, "notifications")

    # Opening it shows the scheduled prompt and its reply, and clears the badge.
    notification.click()
    expect(page.locator(".msg-user").last).to_contain_text("Scheduled prompt")
    expect(page.locator(".msg-assistant").last).to_have_attribute("data-status", "completed")
    expect(badge).to_have_count(0)
    expect(page.locator("#bell-count")).to_be_hidden()
    assert api.get("/badges").json()["total"] == 0

    # The run history shows the scheduled run; "Run now" adds one; the schedule can be disabled.
    # Saving it here keeps what only the API sets (its tools), and says whether its runs may use
    # tools that change things (it once reset both).
    limited = {**{k: schedule[k] for k in ("prompt", "cron", "timezone")}, "tools": ["builtin"], "allow_changes": True}
    assert api.put(f"/ai_chats/{chat_id}/schedule", json=limited).status_code == 200
    page.get_by_role("button", name="Schedule").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Its runs may use tools that change things", exact=False)).to_be_checked()
    expect(dialog.locator("#schedule-runs li").first).to_contain_text("Scheduled")
    dialog.get_by_role("button", name="Run now").click()
    expect(dialog.locator("#schedule-runs li").first).to_contain_text("Run now")
    expect(page.locator(".msg-user")).to_have_count(3)
    expect(page.locator(".msg-assistant").nth(2)).to_have_attribute("data-status", "completed", timeout=30_000)

    def replies_notified_and_read() -> bool:  # the run-now reply lands in the open chat: read at once
        listed = api.get("/notifications").json()
        return len([n for n in listed["data"] if n["ai_chat_id"] == chat_id]) == 3 and listed["unread_count"] == 0

    eventually(page, replies_notified_and_read)
    dialog.get_by_label("Enabled").uncheck()
    expect(dialog.locator("#schedule-preview")).to_contain_text("Disabled")
    dialog.get_by_role("button", name="Save schedule").click()
    expect(page.get_by_test_id("chat-schedule")).to_have_text("Schedule disabled")
    saved = api.get(f"/ai_chats/{chat_id}/schedule").json()
    assert (saved["active"], saved["tools"], saved["allow_changes"]) == (False, ["builtin"], True)

    # Delete asks first; cancelling keeps the chat.
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    assert api.get(f"/ai_chats/{chat_id}").status_code == 200
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator(f'#chat-list a[data-chat-id="{chat_id}"]')).to_have_count(0)
    assert api.get(f"/ai_chats/{chat_id}").status_code == 404

    # Sign out forgets the key.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "aichats_session"]
    assert page.evaluate("fetch('/api/v1/ai_chats').then((r) => r.status)") == 401
    assert page.errors == []  # type: ignore[attr-defined]


def test_attachment_upload_and_composer_keys(web_server: LiveServer, page: Page) -> None:
    account = new_account(web_server)
    sign_in(page, web_server, account.key)
    box = page.get_by_label("First message")
    box.fill("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    assert box.input_value() == "first line\nsecond line"  # Shift+Enter is a new line, not a send
    page.locator("input[type=file]").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"Revenue: 42"}]
    )
    expect(page.locator(".composer .attachments li")).to_contain_text("notes.txt")
    box.press("Enter")
    page.wait_for_url(re.compile(r"#/chats/aich_"))
    expect(page.locator(".msg-user .attachments")).to_contain_text("notes.txt")
    chat_id = page.url.rsplit("/", 1)[1]
    with web_server.client(account) as api:
        first = api.get(f"/ai_chats/{chat_id}/messages").json()["data"][0]
    assert first["content"] == "first line\nsecond line"
    assert [a["filename"] for a in first["attachments"]] == ["notes.txt"]


def test_phone_width_keyboard_and_no_outside_requests(web_server: LiveServer, page: Page) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    account = new_account(web_server)
    with web_server.client(account) as api:
        chat = api.post("/ai_chats", json={"message_text": "A long question " * 40, "title": "Phone"}).json()
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(web_server.root + "/")
    # Keyboard only: the key field has focus, Enter signs in.
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(account.key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="New chat")).to_be_visible()
    screenshot(page, "phone-chat-list")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.locator(f'#chat-list a[data-chat-id="{chat["id"]}"]').focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Phone")).to_be_visible()
    expect(page.get_by_role("link", name="← Chats")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "phone-conversation")
    # Dialogs open and close from the keyboard, focus going back to their button (on a phone
    # the chat's actions fold behind "Chat actions").
    page.get_by_role("button", name="Chat actions").focus()
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Rename").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert page.evaluate("document.activeElement.textContent") == "Rename"
    outside = [url for url in requested if not url.startswith(web_server.root)]
    assert outside == []
    headers = httpx2.get(web_server.root + "/").headers
    assert "default-src 'self'" in headers["content-security-policy"]
