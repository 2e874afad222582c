"""The built-in tools, called directly on a real database: the time in the chat's zone, and a
web page fetched under the outbound rules (redirects checked at every hop, and counted)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aichats.config import Settings
from aichats.errors import NotFound
from aichats.services import schedules, users
from aichats.services.chats import NewChat
from aichats.services.messages import NewMessage, create_chat
from aichats.storage.database import Database
from aichats.tools import builtin

pytestmark = pytest.mark.anyio


class _Redirects(BaseHTTPRequestHandler):
    """``/hop/N``: a redirect to ``/hop/N-1``, and ``/hop/0`` a page; ``/page``: a page;
    ``/big``: 30,000 bytes of text; ``/to-file``: a redirect to a ``file:`` URL."""

    def do_GET(self) -> None:
        if self.path == "/big":  # 3,000 lines of text, 10 bytes each
            body = b"".join(b"line %04d\n" % n for n in range(3000))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(ConnectionError):  # a client that read enough hangs up
                self.wfile.write(body)
        elif self.path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif self.path.startswith("/hop/") and self.path != "/hop/0":
            self._redirect(f"/hop/{int(self.path.rsplit('/', 1)[1]) - 1}")
        else:
            body = b"<html><title>T</title><body><script>x()</script><p>Arrived</p></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirects)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def context_of(db: Database, **settings: Any) -> builtin.Context:
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage("hello")))
    return builtin.Context(db, Settings(**settings), chat["pk"], chat["id"])


async def test_current_time_is_in_the_chats_schedule_zone_unless_told(db: Database) -> None:
    context = await context_of(db)
    assert "in UTC" in await builtin.current_time(context, {})
    spec = schedules.ScheduleSpec(timezone="Asia/Tokyo", prompt="p", cron="0 9 * * 1")
    await schedules.put_schedule(db, context.chat_pk, spec, min_interval_seconds=60)
    assert "in Asia/Tokyo (UTC+0900)" in await builtin.current_time(context, {})
    assert "in Europe/Paris" in await builtin.current_time(context, {"timezone": "Europe/Paris"})
    with pytest.raises(builtin.ToolFailure, match="IANA"):
        await builtin.current_time(context, {"timezone": "Mars/Olympus"})


async def test_fetch_url_follows_redirects_checking_each_hop(db: Database, site: str) -> None:
    context = await context_of(db, tools_allow_private_urls=True)
    page = await builtin.fetch_url(context, {"url": f"{site}/hop/{builtin.MAX_REDIRECTS}"})
    assert page.startswith(f"200 {site}/hop/0") and "Arrived" in page and "x()" not in page
    with pytest.raises(builtin.ToolFailure, match=f"more than {builtin.MAX_REDIRECTS} redirects"):
        await builtin.fetch_url(context, {"url": f"{site}/hop/{builtin.MAX_REDIRECTS + 1}"})


async def test_fetch_url_reads_at_most_its_limit(db: Database, site: str) -> None:
    context = await context_of(db, tools_allow_private_urls=True, fetch_max_bytes=2048)
    page = await builtin.fetch_url(context, {"url": f"{site}/big"})
    head, _, text = page.partition("\n\n")
    assert head == f"200 {site}/big (the first 2048 bytes)"
    assert text == "".join(f"line {n:04d}\n" for n in range(204)) + "line 020"  # 204 lines and 8 bytes: 2,048
    whole = await builtin.fetch_url(await context_of(db, tools_allow_private_urls=True), {"url": f"{site}/big"})
    assert whole.startswith(f"200 {site}/big\n\n") and whole.endswith("line 2999\n")


async def test_fetch_url_checks_where_a_redirect_leads(db: Database, site: str) -> None:
    """A hop the first URL was allowed to make is checked like a first URL: not to a file."""
    context = await context_of(db, tools_allow_private_urls=True)
    with pytest.raises(builtin.ToolFailure, match="not fetched"):
        await builtin.fetch_url(context, {"url": f"{site}/to-file"})


async def test_fetch_url_refuses_private_addresses_in_every_spelling(db: Database, site: str) -> None:
    strict = await context_of(db)
    with pytest.raises(builtin.ToolFailure, match="loopback"):
        await builtin.fetch_url(strict, {"url": f"{site}/page"})
    for url in ("http://2130706433/", "http://0x7f.1/", "http://[::ffff:127.0.0.1]/", "file:///etc/passwd"):
        with pytest.raises(builtin.ToolFailure, match="not fetched"):
            await builtin.fetch_url(strict, {"url": url})


async def test_the_schedule_tools_set_pause_change_resume_and_remove_it(db: Database) -> None:
    context = await context_of(db)
    with pytest.raises(builtin.ToolFailure, match="prompt and a timezone"):
        await builtin.set_schedule(context, {"cron": "0 9 * * 1"})
    await builtin.set_schedule(context, {"prompt": "Weekly report", "timezone": "Europe/Paris", "cron": "0 9 * * 1"})
    row = await schedules.get_schedule(db, context.chat_pk)
    assert (row["cron"], row["timezone"], row["active"]) == ("0 9 * * 1", "Europe/Paris", True)
    await builtin.pause_schedule(context, {})
    assert not (await schedules.get_schedule(db, context.chat_pk))["active"]
    # Changing a paused schedule's prompt leaves it paused: what the call leaves out stays.
    await builtin.set_schedule(context, {"prompt": "Weekly revenue report"})
    row = await schedules.get_schedule(db, context.chat_pk)
    assert (row["prompt"], row["cron"], row["active"]) == ("Weekly revenue report", "0 9 * * 1", False)
    await builtin.resume_schedule(context, {})
    assert (await schedules.get_schedule(db, context.chat_pk))["active"]
    await builtin.delete_schedule(context, {})
    with pytest.raises(NotFound):
        await schedules.get_schedule(db, context.chat_pk)
