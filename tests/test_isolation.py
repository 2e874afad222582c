"""The test suite's own promise (``tests/conftest.py``): each test has a database of its own,
and an in-process app on it answers as the server would."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from aichats.storage import database
from aichats.storage.schema import users
from tests.support.servers import AppServer

_seen: list[str] = []


async def _user_count(database_url: str) -> int:
    db = await database.connect(database_url, pool_size=1)
    try:
        row = await db.fetch_one(sa.select(sa.func.count().label("n")).select_from(users))
        assert row is not None
        return int(row["n"])
    finally:
        await db.close()


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_an_empty_migrated_database_of_its_own(app_server: AppServer, turn: str) -> None:
    """The second turn runs after the first made a user and a chat: it sees none of them."""
    url = app_server.database_url
    assert url not in _seen
    _seen.append(url)
    assert asyncio.run(_user_count(url)) == 0
    account = app_server.account()
    with app_server.client(account) as api:
        assert api.get("/ai_chats").json()["data"] == []
        assert api.post("/ai_chats", json={"message_text": "hi"}).status_code == 201
    assert asyncio.run(_user_count(url)) == 1
