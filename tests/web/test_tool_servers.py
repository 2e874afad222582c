"""The Tools screen, in Chromium: the user's MCP tool servers added, tested again and removed,
and the tools the agent has, against ``aichats serve`` and a real MCP server
(``tests/support/mcp_server.py``) on this machine's loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.mcp_server import garbage_server, serving_mcp
from tests.support.servers import LiveServer, serving
from tests.web.conftest import new_account, screenshot, sign_in


@pytest.fixture(scope="module")
def open_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """No agent (nothing is asked here); leave to reach MCP servers on loopback."""
    env = {"AICHATS_WORKERS": "0", "AICHATS_TOOLS_ALLOW_PRIVATE_URLS": "true"}
    with serving(new_database(), tmp_path_factory.mktemp("web-tool-servers"), env) as server:
        yield server


def test_add_test_and_remove_a_tool_server(open_server: LiveServer, page: Page) -> None:
    server = open_server
    account = new_account(server)
    api = server.client(account)
    sign_in(page, server, account.key)
    page.get_by_role("link", name="Tools").click()
    expect(page.get_by_role("heading", name="Tools", exact=True)).to_be_visible()
    expect(page.locator("#tool-servers li")).to_have_count(0)
    expect(page.get_by_text("No tool servers yet.")).to_be_visible()
    available = page.locator("#available-tools")
    expect(available.locator('[data-kind="builtin"] [data-tool="current_time"]')).to_be_visible()
    expect(available.locator('[data-kind="user"]')).to_contain_text("None yet")

    with serving_mcp() as mcp:
        # Add, with a header: the server's tools are listed at once.
        form = page.locator("form.add-server")
        form.get_by_label("Name", exact=True).fill("crm")
        form.get_by_label("URL", exact=True).fill(mcp.url)
        form.get_by_role("button", name="+ Add a header").click()
        form.get_by_label("Header 1 name").fill("Authorization")
        form.get_by_label("Header 1 value").fill("Bearer t0ken")
        form.get_by_role("button", name="Add server").click()
        expect(form.locator(".server-added")).to_contain_text("Added “crm”: ")
        listed = api.get("/tool_servers").json()["data"]
        assert [(s["name"], s["url"], s["has_headers"]) for s in listed] == [("crm", mcp.url, True)]
        tools = [tool["name"] for tool in listed[0]["tools"]]
        assert {"weekly_revenue", "delete_record", "html"} <= set(tools), tools
        expect(form.locator(".server-added")).to_have_text(f"Added “crm”: {len(tools)} tools ({', '.join(tools)}).")
        expect(form.get_by_label("Name", exact=True)).to_have_value("")
        item = page.get_by_role("listitem", name="crm", exact=True)
        expect(item.locator(".server-tools code")).to_have_text(tools)
        expect(item.locator(".server-tools li", has_text="delete_record")).to_contain_text("needs approval")
        expect(item.locator(".server-tools li", has_text="weekly_revenue")).not_to_contain_text("needs approval")
        expect(item).to_contain_text("with headers")
        expect(page.get_by_text("No tool servers yet.")).to_be_hidden()
        assert "t0ken" not in page.content()  # the header's value is never shown again
        # The agent's tools now include the server's, under its name.
        yours = available.locator('[data-kind="user"]')
        expect(yours.locator('[data-tool="crm__weekly_revenue"]')).to_be_visible()
        expect(yours.locator('[data-tool="crm__delete_record"]')).to_contain_text("needs approval")
        expect(yours.locator('[data-tool="crm__weekly_revenue"]')).not_to_contain_text("needs approval")
        screenshot(page, "tool-servers")

        # Something that is not an MCP server is refused, with the API's own reason; the
        # headers of the form's rows were sent to it.
        with garbage_server() as garbage:
            form.get_by_label("Name", exact=True).fill("broken")
            form.get_by_label("URL", exact=True).fill(garbage.url)
            form.get_by_role("button", name="+ Add a header").click()
            form.get_by_label("Header 1 name").fill("X-Api-Key")
            form.get_by_label("Header 1 value").fill("k-123")
            form.get_by_role("button", name="Add server").click()
            expect(form.get_by_role("alert")).not_to_have_text("")
            assert any(request.get("x-api-key") == "k-123" for request in garbage.requests), garbage.requests
            refused = api.post("/tool_servers", json={"name": "broken", "url": garbage.url})
            assert refused.status_code == 422, refused.text
            expect(form.get_by_role("alert")).to_have_text(refused.json()["error"]["message"])
        expect(page.locator("#tool-servers > li")).to_have_count(1)

        # Test again: it still answers.
        item.get_by_role("button", name="Test again").click()
        expect(item.locator(".server-status")).to_have_text(f"It answers: {len(tools)} tools.")
        mcp.kill()

    # Gone: testing it again says why it failed.
    item.get_by_role("button", name="Test again").click()
    expect(item.locator(".server-status")).to_contain_text("The test failed: ")

    # Remove asks first; then the server and its tools are gone.
    item.get_by_role("button", name="Remove").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(page.locator("#tool-servers > li")).to_have_count(0)
    expect(page.get_by_text("No tool servers yet.")).to_be_visible()
    expect(available.locator('[data-tool="crm__weekly_revenue"]')).to_have_count(0)
    assert api.get("/tool_servers").json()["data"] == []
    api.close()
    assert page.errors == []  # type: ignore[attr-defined]


def test_the_form_checks_its_fields_before_sending(open_server: LiveServer, page: Page) -> None:
    server = open_server
    account = new_account(server)
    sign_in(page, server, account.key)
    page.goto(f"{server.root}/#/tools")
    form = page.locator("form.add-server")
    form.get_by_role("button", name="Add server").click()
    expect(form.get_by_role("alert")).to_have_text("Give the server a name and a URL.")
    form.get_by_label("Name", exact=True).fill("crm")
    form.get_by_label("URL", exact=True).fill("https://mcp.example.com/mcp")
    form.get_by_role("button", name="+ Add a header").click()
    form.get_by_label("Header 1 value").fill("no name")
    form.get_by_role("button", name="Add server").click()
    expect(form.get_by_role("alert")).to_have_text("Each header needs a name.")
    # Rows are named by their place: removing the first renames the second.
    form.get_by_role("button", name="+ Add a header").click()
    form.get_by_label("Header 2 name").fill("Authorization")
    form.get_by_role("button", name="Remove header 1").click()
    expect(form.get_by_label("Header 1 name")).to_have_value("Authorization")
    expect(form.get_by_role("button", name="+ Add a header")).to_be_focused()
    # On a phone the screen is reached from the top bar too, and fits.
    page.set_viewport_size({"width": 375, "height": 667})
    page.get_by_role("link", name="← Chats").click()
    page.get_by_role("link", name="Tools").click()
    expect(page.get_by_role("heading", name="Tools", exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
