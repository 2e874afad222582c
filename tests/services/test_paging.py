"""The one paging implementation (``pagination.Keyset``): the lists read newest first by
``first``/``after`` only (runs, notifications) answer as they always have."""

from __future__ import annotations

import pytest

from aichats.services import chats, notifications, users
from aichats.services.chats import NewChat
from aichats.services.messages import NewMessage, create_chat
from aichats.services.pagination import PageRequest
from aichats.storage.database import Database

pytestmark = pytest.mark.anyio


async def notified(db: Database, count: int) -> tuple[str, list[str]]:
    """A user with ``count`` notifications; their ids, newest first."""
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        made = await create_chat(tx, user_id, NewChat(NewMessage("hello")))
    chat = await chats.get_chat(db, user_id, made["id"])
    async with db.transaction() as tx:
        for i in range(count):
            await notifications.notify(tx, chat, kind="ai_chat.reply", title="t", body=str(i))
    page, _ = await notifications.list_notifications(db, user_id, PageRequest(first=100))
    return user_id, [row["id"] for row in page.items]


async def test_forwards_only_lists_walk_newest_first(db: Database) -> None:
    user_id, newest_first = await notified(db, 5)
    first, _ = await notifications.list_notifications(db, user_id, PageRequest(first=2))
    assert [r["id"] for r in first.items] == newest_first[:2]
    assert (first.page_info.has_previous_page, first.page_info.has_next_page) == (False, True)
    after = PageRequest(first=2, after=first.page_info.end_cursor)
    second, _ = await notifications.list_notifications(db, user_id, after)
    assert [r["id"] for r in second.items] == newest_first[2:4]
    assert (second.page_info.has_previous_page, second.page_info.has_next_page) == (True, True)
    third, _ = await notifications.list_notifications(db, user_id, PageRequest(after=second.page_info.end_cursor))
    assert [r["id"] for r in third.items] == newest_first[4:]
    assert (third.page_info.has_previous_page, third.page_info.has_next_page) == (True, False)


async def test_forwards_only_lists_read_last_as_first_and_ignore_before(db: Database) -> None:
    user_id, newest_first = await notified(db, 4)
    last, _ = await notifications.list_notifications(db, user_id, PageRequest(last=2))
    assert [r["id"] for r in last.items] == newest_first[:2]
    assert (last.page_info.has_previous_page, last.page_info.has_next_page) == (False, True)
    ignored = PageRequest(first=3, before="not a cursor at all")
    page, _ = await notifications.list_notifications(db, user_id, ignored)
    assert [r["id"] for r in page.items] == newest_first[:3]
