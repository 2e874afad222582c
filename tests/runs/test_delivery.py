"""The webhook sender as a supervised service: restarted after a crash, never one more listener."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from aichats.config import Settings
from aichats.runs.background import background
from aichats.services import webhooks
from aichats.storage.database import Database, Listener

pytestmark = pytest.mark.anyio


async def test_restarting_the_webhook_sender_adds_no_listener(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Database`` has no unlisten: a listener registered by the service's own loop would
    be one more on every restart (each setting a wake-up nobody waits for any more)."""
    channels: list[str] = []
    listen = db.listen

    async def counted(channel: str, listener: Listener) -> None:
        channels.append(channel)
        await listen(channel, listener)

    def broken(*, allow_private: bool) -> httpx2.AsyncClient:
        raise RuntimeError("no HTTP client today")

    monkeypatch.setattr(db, "listen", counted)
    monkeypatch.setattr(webhooks, "sender", broken)  # every start of the sender crashes
    async with background(db, Settings(model="test:echo"), workers=1, housekeeping=False) as supervisor:
        (service,) = [s for s in supervisor.services if s.name == "webhooks"]
        for _ in range(3):  # what the supervisor does after each crash
            with pytest.raises(RuntimeError, match="no HTTP client"):
                await service.run()
            await asyncio.sleep(0)
    assert channels.count(webhooks.CHANNEL) == 1
