"""Replies rendered as Markdown, safely: in Chromium, against ``aichats serve`` with test models.

The test models echo the user's words one space apart, so a reply with headings, lists and code
blocks is brought in by rewriting the messages' answer on its way to the page
(``with_reply_text``): what is tested is the page's rendering of a reply, whatever wrote it.
Hostile text also comes the real way, from the model (an echo) and, in ``test_tool_calls.py``,
from an MCP server's tool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from playwright.sync_api import Page, Route, expect

from tests.support.accounts import Account
from tests.support.servers import LiveServer, serving
from tests.support.waiting import wait_for
from tests.web.conftest import new_account, screenshot, sign_in

HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'

MARKDOWN = """# Weekly report

Revenue is **up 4%** on last week, see [the dashboard](https://example.com/dash).

- Subscriptions: 48,210 EUR
- One-off sales: 3,120 EUR

```python
total = 48_210 + 3_120
print(f"{total:,} EUR")
```

| week | EUR |
| --- | ---: |
| 2026-W49 | 51,330 |
"""

# Every way a reply's Markdown could try to become markup, script or a request.
HOSTILE_MARKDOWN = """Raw: <img src=x onerror="window.pwned=3"> <script>window.pwned=4</script>

<iframe src="https://example.com"></iframe>
<style>body { display: none }</style>
<svg onload="window.pwned=5"></svg>
<a href="javascript:window.pwned=6">raw link</a>

[md link](javascript:window.pwned=7) [data](data:text/html,<script>window.pwned=8</script>)
[route](#/tools) [api](/api/v1/ai_chats)

![pixel](https://example.com/pixel.png) ![x](x" onerror="window.pwned=9)
"""


@pytest.fixture(scope="module")
def echo_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``test:echo`` (instant) and ``test:slow`` (20 ms a word) replies: the model is chosen per
    server, so this one answers at once and ``slow_server`` streams."""
    env = {"AICHATS_MODEL": "test:echo", "AICHATS_WORKERS": "1"}
    with serving(new_database(), tmp_path_factory.mktemp("web-markdown"), env) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"AICHATS_MODEL": "test:slow", "AICHATS_WORKERS": "1", "AICHATS_MAX_OUTPUT_TOKENS": "400"}
    with serving(new_database(), tmp_path_factory.mktemp("web-markdown-slow"), env) as server:
        yield server


def with_reply_text(page: Page, text: str, **fields: Any) -> None:
    """Rewrite the messages' answer on its way to the page: the last reply says ``text`` (and has ``fields``)."""

    def rewrite(route: Route) -> None:
        response = route.fetch()
        data = response.json()
        reply = [m for m in data["data"] if m["role"] == "assistant"][-1]
        reply.update(content=text, **fields)
        route.fulfill(response=response, body=json.dumps(data))

    page.route(re.compile(r"/api/v1/ai_chats/[^/]+/messages\?last=\d+$"), rewrite)


def answered_chat(server: LiveServer, account: Account, text: str) -> dict[str, Any]:
    """A chat whose first reply is complete (the echo model answers at once)."""
    with server.client(account) as api:
        chat: dict[str, Any] = api.post("/ai_chats", json={"message_text": text, "title": "Markdown"}).json()

        def answered() -> bool:
            messages = api.get(f"/ai_chats/{chat['id']}/messages").json()["data"]
            return len(messages) == 2 and messages[1]["status"] == "completed"

        wait_for(answered, 15, "the echo model's reply")
    return chat


def attributes(page: Page, selector: str) -> list[str]:
    """``name=value`` of every attribute of every element under ``selector``."""
    return page.locator(selector).evaluate(
        """(root) => [...root.querySelectorAll("*")]
          .flatMap((el) => [...el.attributes].map((a) => `${a.name}=${a.value}`))"""
    )


def test_a_reply_renders_as_markdown_with_a_working_copy_button(echo_server: LiveServer, page: Page) -> None:
    account = new_account(echo_server)
    chat = answered_chat(echo_server, account, "**not bold** # not a heading <b>as typed</b>")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    with_reply_text(page, MARKDOWN)
    sign_in(page, echo_server, account.key)
    page.goto(f"{echo_server.root}/#/chats/{chat['id']}")
    body = page.locator(".msg-assistant .msg-body")
    expect(body.locator("h1")).to_have_text("Weekly report")
    expect(body.locator("strong")).to_have_text("up 4%")
    expect(body.locator("ul > li")).to_have_text(["Subscriptions: 48,210 EUR", "One-off sales: 3,120 EUR"])
    expect(body.locator("table td").last).to_have_text("51,330")
    link = body.get_by_role("link", name="the dashboard")
    expect(link).to_have_attribute("href", "https://example.com/dash")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    code = body.locator(".code-block pre code")
    expect(code).to_have_text('total = 48_210 + 3_120\nprint(f"{total:,} EUR")\n')
    expect(body.locator(".code-language")).to_have_text("python")
    # The user's own text stays as typed: no Markdown, no markup.
    user = page.locator(".msg-user .msg-body")
    expect(user).to_have_text("**not bold** # not a heading <b>as typed</b>")
    expect(user.locator("strong, b, h1")).to_have_count(0)
    screenshot(page, "markdown-reply")

    # Copy puts the code on the clipboard, through the Clipboard API...
    copy = body.get_by_role("button", name="Copy code")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == 'total = 48_210 + 3_120\nprint(f"{total:,} EUR")\n'
    # ... and, where that is refused, through the older copy command.
    page.evaluate("navigator.clipboard.writeText('something else')")
    page.evaluate(
        """() => {
          navigator.clipboard.writeText = () => Promise.reject(new DOMException("refused", "NotAllowedError"));
          document.addEventListener("copy", () => { window.copiedByCommand = true; });
        }"""
    )
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("window.copiedByCommand") is True
    assert page.evaluate("navigator.clipboard.readText()") == 'total = 48_210 + 3_120\nprint(f"{total:,} EUR")\n'
    assert page.locator("textarea.copy-buffer").count() == 0  # the fallback's text area is gone again
    assert page.errors == []  # type: ignore[attr-defined]


def test_markup_in_a_reply_stays_inert(echo_server: LiveServer, page: Page) -> None:
    """Markup the model writes (here: echoes) is shown as text; nothing of it runs or loads."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    account = new_account(echo_server)
    chat = answered_chat(echo_server, account, f"Hi {HOSTILE}")
    sign_in(page, echo_server, account.key)
    page.goto(f"{echo_server.root}/#/chats/{chat['id']}")
    reply = page.locator(".msg-assistant .msg-body")
    expect(reply).to_have_text(f"You said: Hi {HOSTILE}")
    assert page.locator("#main img, #main script").count() == 0
    assert page.evaluate("window.pwned") is None
    assert [url for url in requested if not url.startswith(echo_server.root)] == []


def test_hostile_markdown_is_stripped_or_shown_as_text(echo_server: LiveServer, page: Page) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    account = new_account(echo_server)
    chat = answered_chat(echo_server, account, "hello")
    with_reply_text(page, HOSTILE_MARKDOWN)
    sign_in(page, echo_server, account.key)  # (the sign-in page's own 401 is not counted)
    console: list[str] = []  # a Content-Security-Policy refusal would show here
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.goto(f"{echo_server.root}/#/chats/{chat['id']}")
    body = page.locator(".msg-assistant .msg-body")
    expect(body).to_contain_text('Raw: <img src=x onerror="window.pwned=3"> <script>window.pwned=4</script>')
    expect(body).to_contain_text("<iframe")
    assert body.locator("img, script, iframe, style, svg, form, input").count() == 0
    # The only links left are to the image shown as a link (http(s)); every other one is text.
    hrefs = body.locator("a").evaluate_all("(links) => links.map((a) => a.getAttribute('href'))")
    assert hrefs == ["https://example.com/pixel.png"], hrefs
    expect(body.locator("a")).to_have_attribute("rel", "noopener noreferrer")
    for text in ("md link", "data", "route", "api", "raw link"):
        expect(body).to_contain_text(text)
    # No element carries a handler, a style, an id or a script address.
    for attribute in attributes(page, ".msg-assistant .msg-body"):
        assert not re.match(r"(on\w+|style|id)=|\w+=\s*javascript:", attribute, re.IGNORECASE), attribute
    body.get_by_text("md link").click()
    assert page.evaluate("window.pwned") is None
    assert [url for url in requested if not url.startswith(echo_server.root)] == []
    assert console == []
    assert page.errors == []  # type: ignore[attr-defined]


def test_dompurify_strips_what_markdown_never_makes(echo_server: LiveServer, page: Page) -> None:
    """The second layer on its own: HTML given straight to the page's sanitiser (as if the
    Markdown step had let it through) keeps nothing that runs, loads or restyles."""
    account = new_account(echo_server)
    sign_in(page, echo_server, account.key)
    html = page.evaluate(
        """async () => {
          const { sanitize } = await import('/static/markdown.js');
          const fragment = sanitize(`<p>ok <img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>
            <a href="javascript:window.pwned=3" onclick="window.pwned=4">js</a> <a href="https://e.com">fine</a>
          <a href="/api/v1/ai_chats">path</a> <a href="#/tools">route</a>
            <iframe src="https://e.com"></iframe><style>*{}</style><svg><script>window.pwned=5</script></svg>
            <form action="/api/v1/ai_chats"><input name="x"></form><div id="bell" style="x" class="toast">c</div>
            <math><mi xlink:href="javascript:x">m</mi></math><code class="language-js toast">x</code>
            <input type="checkbox" checked onclick="window.pwned=6"></p>`);
          const box = document.createElement('div');
          box.append(fragment);
          return box.innerHTML;
        }"""
    )
    for bad in ("<img", "<script", "<iframe", "<style", "<svg", "<form", "<math", "onerror", "onclick", "javascript:",
                'id="bell"', "style=", "toast", 'name="x"', "/api/", "#/"):  # fmt: skip
        assert bad not in html, (bad, html)
    assert '<a href="https://e.com" target="_blank" rel="noopener noreferrer">fine</a>' in html
    assert '<code class="language-js">x</code>' not in html  # "language-js toast" is not one language
    assert '<input type="checkbox" checked="" disabled="">' in html
    assert page.evaluate("window.pwned") is None


def test_the_vendored_libraries_are_served_as_scripts(echo_server: LiveServer) -> None:
    """Module scripts load only with a JavaScript type (the server sends nosniff): ``.mjs`` too."""
    for path in ("vendor/marked/marked.esm.js", "vendor/dompurify/purify.es.mjs", "markdown.js"):
        answer = httpx2.get(f"{echo_server.root}/static/{path}")
        assert answer.status_code == 200, path
        assert "javascript" in answer.headers["content-type"], (path, answer.headers["content-type"])
        assert answer.headers["x-content-type-options"] == "nosniff"


WATCH = """
() => new Promise((resolve) => {
  // Every text the reply shows while it is written, until it ends.
  const seen = [];
  const look = () => {
    const reply = document.querySelector(".msg-assistant");
    if (reply) {
      const text = reply.querySelector(".msg-body").textContent.trim();
      if (text && seen.at(-1) !== text) seen.push(text);
      const status = reply.dataset.status;
      if (status !== "pending" && status !== "streaming") return resolve({ seen, status });
    }
    requestAnimationFrame(look);
  };
  look();
})
"""


def test_a_streaming_reply_renders_as_it_comes_without_losing_text(slow_server: LiveServer, page: Page) -> None:
    account = new_account(slow_server)
    words = " ".join(f"w{n}" for n in range(120))  # 20 ms a word: 2.4 s of streaming
    sign_in(page, slow_server, account.key)
    page.get_by_label("First message").fill(words)
    page.get_by_label("First message").press("Enter")
    page.wait_for_url(re.compile(r"#/chats/aich_"))
    watched = page.evaluate(WATCH)
    assert watched["status"] == "completed"
    final = f"You said: {words}"
    expect(page.locator(".msg-assistant .msg-body")).to_have_text(final)
    partial = [text for text in watched["seen"] if text != final]
    assert len(partial) >= 5, f"the reply did not render as it streamed: {watched['seen']}"
    assert all(final.startswith(text) for text in partial), watched["seen"]
    # Drawn at most every 80 ms or so: far fewer times than the 122 words.
    assert len(watched["seen"]) < 80, len(watched["seen"])
