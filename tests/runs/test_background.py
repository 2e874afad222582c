"""What ``serve`` and ``worker`` run: the services of each, and a turn answered under them."""

from __future__ import annotations

import asyncio
import gc

import pytest

from aichats.config import Settings
from aichats.runs.background import background
from aichats.services import users
from aichats.services.chats import NewChat
from aichats.services.messages import NewMessage, create_chat
from aichats.storage.database import Database
from tests.runs.test_worker import messages_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("workers", "housekeeping", "services"),
    [
        (2, True, ["worker", "scheduler", "webhooks", "housekeeping"]),  # serve
        (0, True, ["housekeeping"]),  # serve with AICHATS_WORKERS=0: the API alone
        (1, False, ["worker", "scheduler", "webhooks"]),  # aichats worker
    ],
)
async def test_each_process_runs_its_services(
    db: Database, workers: int, housekeeping: bool, services: list[str]
) -> None:
    settings = Settings(model="test:echo")
    async with background(db, settings, workers=workers, housekeeping=housekeeping) as supervisor:
        assert [service.name for service in supervisor.services] == services


@pytest.mark.parametrize(("workers", "housekeeping"), [(2, True), (0, True), (1, False)])  # serve, API alone, worker
async def test_what_startup_made_is_out_of_the_collectors_reach(db: Database, workers: int, housekeeping: bool) -> None:
    """A full collection in the middle of a burst of fires scanned every module and model
    (an `aichats worker` stopped 200 ms): each process freezes them once its services run."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    async with background(db, Settings(model="test:echo"), workers=workers, housekeeping=housekeeping) as supervisor:
        assert gc.get_freeze_count() > 10_000
        assert not any(o is supervisor for o in gc.get_objects())  # made last: startup is over


async def test_a_message_is_answered_by_the_supervised_workers(db: Database) -> None:
    user_id = await users.create_user(db)
    async with background(db, Settings(model="test:echo"), workers=1, housekeeping=False):
        async with db.transaction() as tx:
            chat = await create_chat(tx, user_id, NewChat(NewMessage("are you there")))
        async with asyncio.timeout(10):
            while (replies := (await messages_of(db, chat))[1:]) and replies[0]["status"] != "completed":
                await asyncio.sleep(0.02)
    assert replies[0]["content"] == "You said: are you there"
