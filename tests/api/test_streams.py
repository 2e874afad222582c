"""Notification streams at scale: one badge computation per user per change, shared by all
of the user's streams (a server in this process, so that its counters can be read)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import httpx2
import sqlalchemy as sa

from aichats.config import Settings
from aichats.services import notifications
from aichats.storage import database
from aichats.storage.schema import ai_chats
from tests.support.accounts import Account, make_account
from tests.support.api import create
from tests.support.servers import uvicorn_server
from tests.support.sse import badge_events
from tests.support.waiting import wait_for


class BadgeStream(threading.Thread):
    """A notifications stream read in the background: every ``badges`` state it sent."""

    def __init__(self, api: str, account: Account) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = api + "/notifications/events", account.headers
        self.states: list[dict] = []

    def run(self) -> None:
        with contextlib.suppress(httpx2.TransportError):  # the server stops under it at the end
            with httpx2.stream("GET", self.url, headers=self.headers, timeout=30) as response:
                for state in badge_events(response):
                    self.states.append(state)


def add_reply_notification(database_url: str, chat_id: str) -> None:
    """A reply's notification, written the way a worker writes it (here: from outside the server)."""

    async def run() -> None:
        db = await database.connect(database_url, pool_size=1)
        try:
            chat = await db.fetch_one(sa.select(ai_chats).where(ai_chats.c.id == sa.bindparam("id")), {"id": chat_id})
            assert chat is not None
            async with db.transaction() as tx:
                await notifications.notify(tx, chat, kind="ai_chat.reply", title="t", body="b", message_id=None)
        finally:
            await db.close()

    asyncio.run(run())


def test_notification_streams_share_one_computation_per_change(database_url: str, tmp_path: Path) -> None:
    """Many streams of one user cost one badge computation per change, none while idle (each
    stream once recomputed everything every second on SQLite, and on every change), and a
    change still reaches every stream."""
    account = make_account(database_url)
    settings = Settings(database_url=database_url, workers=0, files_dir=str(tmp_path / "files"))
    with uvicorn_server(settings) as api_root:
        with httpx2.Client(base_url=api_root, headers=account.headers, timeout=10) as api:
            chat = create(api)
        before = notifications.computations
        streams = [BadgeStream(api_root, account) for _ in range(20)]
        for stream in streams:
            stream.start()
        wait_for(lambda: all(stream.states for stream in streams))
        assert notifications.computations - before <= 2  # shared by the 20 streams

        connected = notifications.computations
        time.sleep(3)  # idle: nothing changes, nothing is computed or sent
        assert notifications.computations == connected
        assert all(len(stream.states) == 1 for stream in streams)

        add_reply_notification(database_url, chat["id"])
        wait_for(lambda: all(len(stream.states) == 2 for stream in streams))
        assert notifications.computations - connected <= 2
        assert all(stream.states[1]["ai_chats"] == {chat["id"]: 1} for stream in streams)
