"""The day's token usage in the top bar, in the browser: it moves when a reply lands, says so
once the daily budget is used up, and a new message then shows why it was refused."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.servers import LiveServer, serving
from tests.web.conftest import new_account, screenshot, sign_in

BUDGET = 40  # tokens a day: test:echo's first reply fits, its second does not


@pytest.fixture(scope="module")
def budget_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"AICHATS_MODEL": "test:echo", "AICHATS_WORKERS": "1", "AICHATS_TOKEN_BUDGET_PER_DAY": str(BUDGET)}
    with serving(new_database(), tmp_path_factory.mktemp("web-usage"), env) as server:
        yield server


def test_the_top_bar_shows_the_day_s_usage_against_the_budget(budget_server: LiveServer, page: Page) -> None:
    account = new_account(budget_server)
    sign_in(page, budget_server, account.key)
    usage = page.locator("#day-usage")
    expect(usage).to_have_text(f"0 / {BUDGET} tokens today")
    expect(usage).to_have_attribute("title", re.compile(f"^{BUDGET} tokens left today; the budget resets "))

    page.get_by_label("First message").fill("Hi")
    page.get_by_label("First message").press("Enter")
    page.wait_for_url(re.compile(r"#/chats/aich_"))
    expect(page.locator(".msg-assistant")).to_have_attribute("data-status", "completed")
    with budget_server.client(account) as api:
        spent = api.get("/usage").json()["blended_tokens"]
    assert 0 < int(spent) < BUDGET
    expect(usage).to_have_text(f"{spent} / {BUDGET} tokens today")  # it moved when the reply landed

    composer = page.get_by_label("Message", exact=True)
    composer.fill("A longer question, so that this reply passes the day's budget")
    composer.press("Enter")
    expect(page.locator(".msg-assistant").last).to_have_attribute("data-status", "completed")
    expect(usage).to_have_text(re.compile(rf"^Daily token budget used up \(\d+ / {BUDGET}\)$"))
    expect(usage).to_have_class(re.compile(r"\bover\b"))
    screenshot(page, "budget-used-up")

    composer.fill("One more")
    composer.press("Enter")
    expect(page.get_by_text(re.compile("The daily token budget of 40 blended tokens is used up"))).to_be_visible()
    expect(page.locator(".msg-user")).to_have_count(2)  # the refused message was not stored
    assert page.errors == []  # type: ignore[attr-defined]
