"""Tool calls in the conversation, in Chromium, against ``aichats serve`` with the ``test:tools``
model and a real MCP server (``tests/support/mcp_server.py``) registered as the user's.

``test:tools`` calls each offered tool whose name is a word of the user's text, with the text's
first JSON object as arguments, then answers ``"<name> said: <result>"``: the user's text
drives the turn (docs/tools.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, Route, expect

from tests.support.accounts import Account
from tests.support.mcp_server import McpProcess, serving_mcp
from tests.support.servers import LiveServer, serving
from tests.web.conftest import new_account, screenshot, sign_in


@pytest.fixture(scope="module")
def mcp() -> Iterator[McpProcess]:
    with serving_mcp() as server:
        yield server


@pytest.fixture(scope="module")
def tools_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``test:tools``, and leave to reach the MCP server on this machine's loopback."""
    env = {"AICHATS_MODEL": "test:tools", "AICHATS_WORKERS": "1", "AICHATS_TOOLS_ALLOW_PRIVATE_URLS": "true"}
    with serving(new_database(), tmp_path_factory.mktemp("web-tools"), env) as server:
        yield server


def account_with_crm(server: LiveServer, mcp: McpProcess) -> Account:
    """A new user whose own tool server ``crm`` is the test MCP server."""
    account = new_account(server)
    with server.client(account) as api:
        added = api.post("/tool_servers", json={"name": "crm", "url": mcp.url})
    assert added.status_code == 201, added.text
    return account


def ask(page: Page, text: str) -> None:
    """Start a chat with ``text`` from the page."""
    page.get_by_role("link", name="New chat").click()
    page.get_by_label("First message").fill(text)
    page.get_by_label("First message").press("Enter")
    page.wait_for_url(re.compile(r"#/chats/aich_"))


def test_tool_calls_show_folded_before_the_reply_and_unfold(
    tools_server: LiveServer, mcp: McpProcess, page: Page
) -> None:
    account = account_with_crm(tools_server, mcp)
    sign_in(page, tools_server, account.key)
    ask(page, 'What was crm__weekly_revenue for {"week": "2026-W49"}?')
    reply = page.locator(".msg-assistant")
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(".msg-body")).to_have_text("crm__weekly_revenue said: Revenue 2026-W49: 48,210 EUR")
    call = reply.locator(".tool-call")
    expect(call).to_have_count(1)
    expect(call.locator("summary")).to_contain_text("crm__weekly_revenue")
    expect(call.locator(".tool-status")).to_have_text("Done")
    # Folded, and before the reply's text.
    expect(call.locator(".tool-arguments")).to_be_hidden()
    assert call.locator("details").evaluate("(details) => details.open") is False
    order = reply.evaluate(
        "(li) => [...li.children].map((el) => el.className).filter((c) => /tool-calls|msg-body/.test(c))"
    )
    assert order == ["tool-calls", "msg-body markdown"], order
    call.locator("summary").click()
    expect(call.locator(".tool-arguments")).to_have_text('{\n  "week": "2026-W49"\n}')
    expect(call.locator(".tool-result")).to_have_text("Revenue 2026-W49: 48,210 EUR")
    expect(call).to_contain_text("Tool server: crm")
    screenshot(page, "tool-call")
    call.locator("summary").click()
    expect(call.locator(".tool-arguments")).to_be_hidden()
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_call_that_changes_things_waits_for_approve_or_deny(
    tools_server: LiveServer, mcp: McpProcess, page: Page
) -> None:
    account = account_with_crm(tools_server, mcp)
    sign_in(page, tools_server, account.key)

    # Approve: the call runs and the reply goes on.
    ask(page, 'Please crm__delete_record {"record_id": "r-1"}')
    reply = page.locator(".msg-assistant")
    expect(reply).to_have_attribute("data-status", "waiting")
    expect(reply.locator(".waiting-note")).to_have_text("Waiting for your approval")
    call = reply.locator(".tool-call")
    expect(call.locator(".tool-status")).to_have_text("Waiting for your approval")
    # Open, so that what it would do is read before deciding.
    expect(call.locator(".tool-arguments")).to_have_text('{\n  "record_id": "r-1"\n}')
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    screenshot(page, "tool-approval")
    call.get_by_role("button", name="Approve").click()
    expect(reply).to_have_attribute("data-status", "completed")
    expect(call.locator(".tool-status")).to_have_text("Done")
    expect(call.get_by_role("button", name="Approve")).to_have_count(0)
    expect(reply.locator(".waiting-note")).to_have_count(0)
    expect(reply.locator(".msg-body")).to_have_text("crm__delete_record said: Deleted record r-1")

    # Deny: the call does not run, the model is told so and answers.
    ask(page, 'Please crm__delete_record {"record_id": "r-2"}')
    reply = page.locator(".msg-assistant")
    call = reply.locator(".tool-call")
    expect(reply).to_have_attribute("data-status", "waiting")
    call.get_by_role("button", name="Deny").click()
    expect(call.locator(".tool-status")).to_have_text("Denied")
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(".msg-body")).to_contain_text("crm__delete_record failed:")
    chat_id = page.url.rsplit("/", 1)[1]
    with tools_server.client(account) as api:
        calls = api.get(f"/ai_chats/{chat_id}/messages").json()["data"][1]["tool_calls"]
    assert [c["status"] for c in calls] == ["denied"]

    # Stop while it waits: the reply ends, its waiting call is denied.
    ask(page, 'Please crm__delete_record {"record_id": "r-3"}')
    reply = page.locator(".msg-assistant")
    expect(reply).to_have_attribute("data-status", "waiting")
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator(".tool-status")).to_have_text("Denied")
    expect(reply.get_by_role("button", name="Approve")).to_have_count(0)
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_tool_result_with_markup_stays_text(tools_server: LiveServer, mcp: McpProcess, page: Page) -> None:
    """The MCP server's ``html`` tool answers ``<img src=x onerror=alert(1)>``: in the call's
    result and in the reply that repeats it, it is text, and no dialog opens."""
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    account = account_with_crm(tools_server, mcp)
    sign_in(page, tools_server, account.key)
    ask(page, "Show me crm__html")
    reply = page.locator(".msg-assistant")
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(".msg-body")).to_have_text("crm__html said: <img src=x onerror=alert(1)>")
    reply.locator(".tool-call summary").click()
    expect(reply.locator(".tool-result")).to_have_text("<img src=x onerror=alert(1)>")
    assert page.locator("#main img, #main script").count() == 0
    page.wait_for_timeout(200)
    assert dialogs == []


def test_hostile_tool_arguments_and_results_are_text(tools_server: LiveServer, page: Page) -> None:
    """Whatever a tool call carries (here put into the messages' answer on its way to the page),
    it is shown as text: nothing in it runs."""
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    account = new_account(tools_server)
    with tools_server.client(account) as api:
        chat = api.post("/ai_chats", json={"message_text": "hello", "title": "Hostile"}).json()
    call: dict[str, Any] = {
        "id": "tcall_hostile1", "name": f"evil{hostile}", "server": {"id": None, "name": hostile},
        "arguments": json.dumps({"q": hostile}), "status": "completed", "result": f"**bold** {hostile}",
        "is_error": False, "needs_approval": False, "created_at": "2026-12-06T09:00:00.000Z",
        "started_at": "2026-12-06T09:00:00.000Z", "finished_at": "2026-12-06T09:00:00.012Z", "duration_ms": 12,
    }  # fmt: skip

    def rewrite(route: Route) -> None:
        response = route.fetch()
        data = response.json()
        data["data"][-1]["tool_calls"] = [call, {**call, "id": "tcall_hostile2", "status": "failed", "is_error": True}]
        route.fulfill(response=response, body=json.dumps(data))

    page.route(re.compile(r"/api/v1/ai_chats/[^/]+/messages\?last=\d+$"), rewrite)
    sign_in(page, tools_server, account.key)
    page.goto(f"{tools_server.root}/#/chats/{chat['id']}")
    calls = page.locator(".msg-assistant .tool-call")
    expect(calls).to_have_count(2)
    for n in range(2):
        calls.nth(n).locator("summary").click()
    expect(calls.first.locator(".tool-name")).to_have_text(f"evil{hostile}")
    expect(calls.first.locator(".tool-arguments")).to_have_text(json.dumps({"q": hostile}, indent=2))
    expect(calls.first.locator(".tool-result")).to_have_text(f"**bold** {hostile}")  # not even Markdown
    expect(calls.last.locator(".tool-status")).to_have_text("Failed")
    expect(calls.last).to_contain_text("Error")
    assert page.locator("#main img, #main script, #main strong").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.errors == []  # type: ignore[attr-defined]
