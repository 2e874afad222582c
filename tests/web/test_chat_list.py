"""The chat list and the escaping of text, against a server with no agent.

No reply lands while these tests count and compare: a worker anywhere on the same
database would reorder the list under them (this module holds no server that has one).
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.support.servers import LiveServer
from tests.web.conftest import new_account, sign_in


def test_user_and_model_text_is_never_markup(live_server: LiveServer, page: Page) -> None:
    account = new_account(live_server)
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    with live_server.client(account) as api:
        chat = api.post("/ai_chats", json={"message_text": f"Hi {hostile}", "title": f"T {hostile}"}).json()
    sign_in(page, live_server, account.key)
    page.goto(f"{live_server.root}/#/chats/{chat['id']}")
    expect(page.get_by_role("heading", level=2)).to_have_text(f"T {hostile}")
    expect(page.locator(".msg-user .msg-body")).to_have_text(f"Hi {hostile}")
    expect(page.locator("#chat-list .chat-title").first).to_have_text(f"T {hostile}")
    assert page.locator("#main img, #sidebar img, #main script, #sidebar script").count() == 0
    assert page.evaluate("window.pwned") is None


def test_chat_list_search_and_infinite_scroll(live_server: LiveServer, page: Page) -> None:
    account = new_account(live_server)
    with live_server.client(account) as api:
        for n in range(45):
            api.post("/ai_chats", json={"message_text": "hi", "title": f"Report {n:02d}"})
    sign_in(page, live_server, account.key)
    chats = page.locator("#chat-list a")
    expect(chats).to_have_count(30)
    expect(chats.first).to_contain_text("Report 44")  # most recent activity first
    page.locator("#chat-list li").last.scroll_into_view_if_needed()
    expect(chats).to_have_count(45)
    expect(chats.last).to_contain_text("Report 00")
    page.get_by_label("Search chats by title").fill("report 4")
    expect(chats).to_have_count(5)  # Report 40..44, any case
    page.get_by_label("Search chats by title").fill("nothing like this")
    expect(page.locator("#list-status")).to_contain_text("No chat title contains")


def test_long_conversations_load_earlier_messages(live_server: LiveServer, page: Page) -> None:
    account = new_account(live_server)
    with live_server.client(account) as api:
        chat = api.post("/ai_chats", json={"message_text": "message 0"}).json()
        for n in range(1, 30):
            api.post(f"/ai_chats/{chat['id']}/messages", json={"message_text": f"message {n}"})
    sign_in(page, live_server, account.key)
    page.goto(f"{live_server.root}/#/chats/{chat['id']}")
    messages = page.locator(".msg")
    expect(messages).to_have_count(50)  # 30 questions, each with its pending reply: the newest 50
    expect(page.locator(".msg-user .msg-body").last).to_have_text("message 29")
    page.get_by_role("button", name="Load earlier messages").click()
    expect(messages).to_have_count(60)
    expect(page.locator(".msg-user .msg-body").first).to_have_text("message 0")
    expect(page.get_by_role("button", name="Load earlier messages")).to_be_hidden()


def test_custom_cron_is_described_or_refused_before_saving(live_server: LiveServer, page: Page) -> None:
    account = new_account(live_server)
    with live_server.client(account) as api:
        chat = api.post("/ai_chats", json={"message_text": "hi", "title": "Cron"}).json()
        sign_in(page, live_server, account.key)
        page.goto(f"{live_server.root}/#/chats/{chat['id']}")
        page.get_by_role("button", name="Schedule").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Repeat").select_option(label="Custom (cron)")
        dialog.get_by_label("Cron expression").fill("61 * * * *")
        expect(dialog.locator("#schedule-preview .error")).to_contain_text("not valid")
        dialog.get_by_label("Cron expression").fill("30 8 * * 1-5")
        dialog.get_by_label("Time zone").select_option("Asia/Tokyo")
        described = "At 08:30 on Monday through Friday (Asia/Tokyo)"
        expect(dialog.locator("#schedule-preview strong")).to_have_text(described)
        # The next runs are shown in the schedule's zone: 08:30 there.
        expect(dialog.locator("#schedule-preview li").first).to_contain_text("08:30")
        dialog.get_by_label("Prompt").fill("Morning brief")
        dialog.get_by_role("button", name="Save schedule").click()
        expect(page.get_by_role("dialog")).to_have_count(0)
        saved = api.get(f"/ai_chats/{chat['id']}/schedule").json()
        assert (saved["cron"], saved["timezone"], saved["prompt"]) == ("30 8 * * 1-5", "Asia/Tokyo", "Morning brief")
        # Reopened, the editor recognises its own presets.
        page.get_by_role("button", name="Schedule").click()
        expect(page.get_by_role("dialog").get_by_label("Repeat")).to_have_value("weekdays")
        expect(page.get_by_role("dialog").get_by_label("At (local time)")).to_have_value("08:30")
