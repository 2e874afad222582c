"""The notification list pages back through older notifications, in the browser."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.servers import LiveServer, serving
from tests.web.conftest import new_account, sign_in


@pytest.fixture(scope="module")
def echo_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Instant replies (``test:echo``), on a database of its own. One worker: the replies,
    and so their notifications, come in the order the chats were created."""
    env = {"AICHATS_MODEL": "test:echo", "AICHATS_WORKERS": "1"}
    with serving(new_database(), tmp_path_factory.mktemp("web-echo"), env) as server:
        yield server


def test_older_notifications_load_on_demand(echo_server: LiveServer, page: Page) -> None:
    account = new_account(echo_server)
    with echo_server.client(account) as api:
        for n in range(23):
            api.post("/ai_chats", json={"message_text": f"question {n}", "title": f"Chat {n:02d}"})
    sign_in(page, echo_server, account.key)
    expect(page.locator("#bell-count")).to_have_text("23", timeout=15_000)
    page.get_by_role("button", name="Notifications, 23 unread").click()
    items = page.locator("#notification-list a.unread")
    expect(items).to_have_count(20)
    expect(items.first).to_contain_text("Chat 22")  # newest first
    page.get_by_role("button", name="Show older").click()
    expect(items).to_have_count(23)
    expect(items.last).to_contain_text("Chat 00")
    expect(page.get_by_role("button", name="Show older")).to_be_hidden()
