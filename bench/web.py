"""Benchmark the web app in a real browser: page load, sign-in, chat list, reply on screen.

Usage (from the repository root)::

    .venv/bin/python bench/web.py [--runs 10]

``aichats serve`` on SQLite with its one in-process worker; Debian's Chromium, headless,
driven by Playwright (as in ``tests/web``). A user with 1,000 chats (made through the API
with ``test:echo``, so they have replies). Then, ``--runs`` times each, in a fresh browser
context (empty cache, new session):

1. **Page load**: navigation to the sign-in form shown (every module and the stylesheet
   fetched and run).
2. **Sign in**: Sign in clicked to the chat list's first page on screen.
3. **Open a chat**: a click in the list to its messages on screen.
4. **Reply on screen** (with ``local:smollm2-135m``, replies of at most 32 tokens, and
   with ``test:echo-200``): Enter pressed in the composer to the first token of the
   reply drawn, and to the complete reply drawn, as the page's own clock sees it.

Prints median and worst of each. Everything it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import CHATS, aichats_command, aichats_env, aichats_server, api_call, connect, run_bench
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
CHATS_PER_USER = 1000
MODELS = {"local:smollm2-135m": "32", "test:echo-200": "512"}

# Enter in the composer, then the page's own clock when the reply's first text and its
# completion are drawn (requestAnimationFrame: what the person sees, not what arrived).
TIMED_TURN = """
(text) => new Promise((resolve) => {
  const box = document.querySelector(".composer textarea");
  const before = document.querySelectorAll(".msg-assistant").length;
  box.value = text;
  const start = performance.now();
  box.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
  let first = null;
  const look = () => {
    const replies = document.querySelectorAll(".msg-assistant");
    const reply = replies.length > before ? replies[replies.length - 1] : null;
    if (reply) {
      if (first === null && reply.querySelector(".msg-body").textContent) first = performance.now() - start;
      if (reply.dataset.status === "completed") return resolve([first, performance.now() - start]);
    }
    requestAnimationFrame(look);
  };
  look();
})
"""


def cli(url: str, *args: str) -> str:
    env = aichats_env({"AICHATS_DATABASE_URL": url})
    return subprocess.run(aichats_command(*args), env=env, check=True, capture_output=True, text=True).stdout


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def report(name: str, samples: list[float]) -> None:
    print(f"| {name} | {statistics.median(samples):,.0f} ms | {max(samples):,.0f} ms |", flush=True)


def signed_in(browser: Browser, root: str, key: str, rows: int) -> tuple[Page, float, float]:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    load = timed(lambda: (page.goto(root + "/"), page.get_by_label("API key").wait_for()))
    page.get_by_label("API key").fill(key)

    def sign_in() -> None:
        page.get_by_role("button", name="Sign in").click()
        page.locator("#chat-list li").nth(min(rows, 30) - 1).wait_for()  # the first page is 30

    return page, load, timed(sign_in)


def open_chat(page: Page, root: str, chat_id: str) -> None:
    page.goto(f"{root}/#/chats/{chat_id}")
    page.locator(".msg").first.wait_for()


def seed(url: str, workdir: Path, key: str, chats: int) -> str:
    """``chats`` chats with their replies (``test:echo``), and one more to chat in: its id."""
    with aichats_server(url, workdir, {"AICHATS_MODEL": "test:echo"}, log_name="seed.log") as root:
        connection = connect(root)
        for n in range(chats):
            api_call(connection, "POST", CHATS, key, {"message_text": f"Question {n}", "title": f"Chat {n}"})
        chat = api_call(connection, "POST", CHATS, key, {"message_text": "Hello", "title": "Bench"})
        while api_call(connection, "GET", f"{CHATS}/{chat['id']}", key)["message_count"] < 2:
            time.sleep(0.2)  # runs go in order: the last reply done, all are
        return chat["id"]


def bench(model: str, max_tokens: str, runs: int, workdir: Path, browser: Browser, first: bool) -> None:
    url = f"sqlite:///{workdir / model.replace(':', '-')}.db"
    cli(url, "migrate")
    user = cli(url, "users", "create").split()[-1]
    key = cli(url, "keys", "create", "--user", user).split()[-1]
    chat_id = seed(url, workdir, key, CHATS_PER_USER if first else 0)
    settings = {"AICHATS_MODEL": model, "AICHATS_MAX_OUTPUT_TOKENS": max_tokens}
    with aichats_server(url, workdir, settings, log_name=f"{model.replace(':', '-')}.log") as root:
        loads, sign_ins, opens, firsts, lasts = [], [], [], [], []
        for _ in range(runs):
            page, load, sign_in = signed_in(browser, root, key, CHATS_PER_USER + 1 if first else 1)
            loads.append(load)
            sign_ins.append(sign_in)
            opens.append(timed(lambda page=page: open_chat(page, root, chat_id)))
            page.locator(".composer textarea").wait_for()
            first_ms, last_ms = page.evaluate(TIMED_TURN, "In one sentence, what is a rainbow?")
            firsts.append(first_ms)
            lasts.append(last_ms)
            page.context.close()
        if first:
            print(f"\n{CHATS_PER_USER:,} chats, {runs} fresh browser contexts each\n")
            print("| step | median | worst |\n| --- | --- | --- |")
            report("page load (sign-in form shown)", loads)
            report("sign in → first page of the chat list shown", sign_ins)
            report("open a chat → messages shown", opens)
        report(f"{model}: Enter → first token shown", firsts)
        report(f"{model}: Enter → complete reply shown", lasts)


def run(args: argparse.Namespace, workdir: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for n, (model, max_tokens) in enumerate(MODELS.items()):
                bench(model, max_tokens, args.runs, workdir, browser, first=n == 0)
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh browser contexts per figure (default: 10)")
    args = parser.parse_args()
    return run_bench("web", lambda workdir: run(args, workdir), "servers and browser stopped, temp files removed")


if __name__ == "__main__":
    sys.exit(main())
