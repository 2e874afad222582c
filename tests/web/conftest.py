"""A real browser (Debian's Chromium, driven by Playwright) against a real server.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium``, which the
test command installs from Debian's packages. A missing browser fails the tests (they
are the web app's only proof), it does not skip them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.support.accounts import Account
from tests.support.servers import LiveServer, serving

CHROMIUM = os.environ.get("AICHATS_TEST_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing that reaches for the network: this machine's network is closed.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# Screens are saved here when set (``docs/screenshots`` refreshes the README's pictures).
SCREENSHOTS = os.environ.get("AICHATS_SCREENSHOTS_DIR")


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A browser per test. Playwright's sync API runs an event loop on this thread while it
    is started, so it must not outlive the test (other fixtures use ``asyncio.run``)."""
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run ./scripts/test (it installs Debian's chromium)")
    with sync_playwright() as playwright:
        # Playwright gives the browser a new, empty profile of its own (a temporary
        # --user-data-dir), and each test below a fresh context.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def web_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``aichats serve`` with the built-in local model, on a database of its own (so its
    worker answers only these tests' chats), and one in-process worker: replies in order."""
    env = {"AICHATS_WORKERS": "1", "AICHATS_MODEL": "local:smollm2-135m", "AICHATS_MAX_OUTPUT_TOKENS": "96"}
    with serving(new_database(), tmp_path_factory.mktemp("web"), env) as server:
        yield server


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="Europe/Paris", locale="en-GB")
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


def screenshot(page: Page, name: str) -> None:
    """Keep a picture of a screen when asked to (``AICHATS_SCREENSHOTS_DIR``)."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.evaluate("document.getElementById('toast').hidden = true")
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def sign_in(page: Page, server: LiveServer, key: str) -> None:
    page.goto(server.root + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="New chat").wait_for()


def new_account(server: LiveServer) -> Account:
    """A user and key. Made on another thread: Playwright's sync API keeps an event loop
    running on this one, where ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(server.account).result()
