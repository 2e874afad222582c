"""Notifications of a transaction: delivered once per channel and payload, only on commit."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from aichats.storage.database import Database
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio


async def heard(db: Database, channel: str) -> list[str | None]:
    got: list[str | None] = []
    await db.listen(channel, got.append)
    return got


async def settle(got: list[str | None], count: int) -> None:
    """Until ``count`` notifications arrived (PostgreSQL delivers them asynchronously), then a little more."""
    await eventually(lambda: len(got) >= count)
    await asyncio.sleep(0.2)  # room for any duplicate to arrive too


async def test_one_notification_per_channel_and_payload(db: Database) -> None:
    channel = f"test_{secrets.token_hex(4)}"
    got = await heard(db, channel)
    async with db.transaction() as tx:
        for payload in ["a", "a", "b", "a"]:
            await tx.notify(channel, payload)
    await settle(got, 2)
    assert [g for g in got if g is not None] == ["a", "b"]


async def test_no_notification_without_a_commit(db: Database) -> None:
    channel = f"test_{secrets.token_hex(4)}"
    got = await heard(db, channel)
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.notify(channel, "lost")
            raise RuntimeError("rolled back")
    async with db.transaction() as tx:
        await tx.notify(channel, "kept")
    await settle(got, 1)
    assert [g for g in got if g is not None] == ["kept"]
