"""Listing chats: keyset pages both ways, both orders, filters; on both databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.errors import Invalid
from aichats.services import chats, users
from aichats.services.chats import AgentIdentifier, ChatFilter, ChatOrder, NewChat
from aichats.services.messages import NewMessage, create_chat
from aichats.services.pagination import PageRequest
from aichats.storage.database import Database
from aichats.storage.schema import ai_chats

pytestmark = pytest.mark.anyio


async def make_chats(db: Database, count: int, **fields: object) -> tuple[str, list[str]]:
    """A new user with ``count`` chats; returns the user and the ids, oldest first."""
    user_id = await users.create_user(db)
    made = []
    for i in range(count):
        async with db.transaction() as tx:
            chat = await create_chat(tx, user_id, NewChat(NewMessage(f"m{i}"), title=f"t{i}", **fields))
        made.append(chat["id"])
    return user_id, made


async def walk(db: Database, user_id: str, size: int, **options: object) -> list[str]:
    seen: list[str] = []
    after = None
    for _ in range(1000):
        page = await chats.list_chats(db, user_id, PageRequest(first=size, after=after), **options)  # type: ignore[arg-type]
        seen += [row["id"] for row in page.items]
        if not page.page_info.has_next_page:
            return seen
        after = page.page_info.end_cursor
    raise AssertionError("pagination did not end")


async def test_forward_walk_yields_each_chat_once_newest_first(db: Database) -> None:
    user_id, made = await make_chats(db, 23)
    assert await walk(db, user_id, 5) == made[::-1]
    first = await chats.list_chats(db, user_id, PageRequest())
    assert len(first.items) == 20 and first.page_info.has_next_page and not first.page_info.has_previous_page


async def test_page_info_both_ways(db: Database) -> None:
    user_id, made = await make_chats(db, 7)
    newest_first = made[::-1]
    page = await chats.list_chats(db, user_id, PageRequest(first=3))
    assert [r["id"] for r in page.items] == newest_first[:3]
    middle = await chats.list_chats(db, user_id, PageRequest(first=3, after=page.page_info.end_cursor))
    assert [r["id"] for r in middle.items] == newest_first[3:6]
    assert middle.page_info.has_previous_page and middle.page_info.has_next_page

    back = await chats.list_chats(db, user_id, PageRequest(last=2, before=middle.page_info.start_cursor))
    assert [r["id"] for r in back.items] == newest_first[1:3]
    assert back.page_info.has_previous_page and back.page_info.has_next_page
    oldest = await chats.list_chats(db, user_id, PageRequest(last=2))
    assert [r["id"] for r in oldest.items] == newest_first[-2:]
    assert oldest.page_info.has_previous_page and not oldest.page_info.has_next_page

    window = await chats.list_chats(
        db, user_id, PageRequest(first=10, after=page.page_info.start_cursor, before=middle.page_info.end_cursor)
    )
    assert [r["id"] for r in window.items] == newest_first[1:5]

    past_end = await chats.list_chats(db, user_id, PageRequest(first=3, after=oldest.page_info.end_cursor))
    assert past_end.items == [] and past_end.page_info.end_cursor is None and past_end.page_info.has_previous_page


async def test_walk_is_stable_while_chats_get_activity_and_deletions(db: Database) -> None:
    user_id, made = await make_chats(db, 12)
    seen: list[str] = []
    page = await chats.list_chats(db, user_id, PageRequest(first=4))
    seen += [r["id"] for r in page.items]
    # New activity on an older chat, a new chat, and a deletion of one already seen.
    async with db.transaction() as tx:
        await tx.execute(
            sa.update(ai_chats).where(ai_chats.c.id == sa.bindparam("i")).values(activity_at=sa.bindparam("t")),
            {"i": made[0], "t": clock.now_ms() + 10_000},
        )
        await create_chat(tx, user_id, NewChat(NewMessage("late")))
    await chats.delete_chat(db, user_id, made[-1])
    while page.page_info.has_next_page:
        page = await chats.list_chats(db, user_id, PageRequest(first=4, after=page.page_info.end_cursor))
        seen += [r["id"] for r in page.items]
    assert seen == made[::-1]


async def test_recent_activity_order(db: Database) -> None:
    user_id, made = await make_chats(db, 4)
    async with db.transaction() as tx:
        await tx.execute(
            sa.update(ai_chats).where(ai_chats.c.id == sa.bindparam("i")).values(activity_at=sa.bindparam("t")),
            {"i": made[1], "t": clock.now_ms() + 60_000},
        )
    order = ChatOrder.last_activity_at
    expected = [made[1], made[3], made[2], made[0]]
    assert await walk(db, user_id, 1, order=order) == expected
    first = await chats.list_chats(db, user_id, PageRequest(first=2), order=order)
    with pytest.raises(Invalid, match="cursor"):
        await chats.list_chats(db, user_id, PageRequest(first=2, after=first.page_info.end_cursor))


async def test_filters(db: Database) -> None:
    user_id, support = await make_chats(db, 3)
    for _ in range(2):
        async with db.transaction() as tx:
            await create_chat(tx, user_id, NewChat(NewMessage("g"), agent_identifier=AgentIdentifier.general))
    general = await walk(db, user_id, 2, flt=ChatFilter(agent_identifier=AgentIdentifier.general))
    assert len(general) == 2 and not set(general) & set(support)
    assert await walk(db, user_id, 2, flt=ChatFilter(only_active_crons=True)) == []

    # The scheduling service sets this flag; the filter must honour it exactly.
    async with db.transaction() as tx:
        for chat_id in (support[0], general[0]):
            await tx.execute(
                sa.update(ai_chats).where(ai_chats.c.id == sa.bindparam("i")).values(has_active_cron=True),
                {"i": chat_id},
            )
    crons = await walk(db, user_id, 1, flt=ChatFilter(only_active_crons=True))
    assert crons == [general[0], support[0]]
    both = ChatFilter(only_active_crons=True, agent_identifier=AgentIdentifier.support)
    assert await walk(db, user_id, 5, flt=both) == [support[0]]


@pytest.mark.parametrize(
    "request_args",
    [{"first": 0}, {"first": 101}, {"last": -1}, {"first": 1, "last": 1}],
)
def test_bad_page_requests(request_args: dict) -> None:
    with pytest.raises(Invalid):
        PageRequest(**request_args)


@pytest.mark.parametrize("cursor", ["???", "bm9wZQ", "YzphYmM", "YToxOjI"])
async def test_bad_cursors_are_invalid(db: Database, cursor: str) -> None:
    with pytest.raises(Invalid, match="cursor"):
        await chats.list_chats(db, "user_x", PageRequest(after=cursor))


async def test_title_search(db: Database) -> None:
    user_id = await users.create_user(db)
    titles = ["Weekly Revenue Analysis", "revenue_2024", "100% growth", r"a\b path", "Ünïcode revenue", None]
    made = {}
    for title in titles:
        async with db.transaction() as tx:
            made[title] = (await create_chat(tx, user_id, NewChat(NewMessage("m"), title=title)))["id"]

    async def search(query: str) -> list[str | None]:
        """The titles found, newest first, walking pages of 2."""
        by_id = {chat_id: title for title, chat_id in made.items()}
        return [by_id[chat_id] for chat_id in await walk(db, user_id, 2, flt=ChatFilter(query=query))]

    assert await search("REVENUE") == ["Ünïcode revenue", "revenue_2024", "Weekly Revenue Analysis"]
    assert await search("_") == ["revenue_2024"]  # not "any one character"
    assert await search("%") == ["100% growth"]  # not "anything"
    assert await search("\\") == [r"a\b path"]
    assert await search("nothing like it") == []
    assert len(await search("")) == len(titles)  # empty: no filter (untitled chats included)
    assert await search("e_2") == ["revenue_2024"]
    assert await search("Ünï") == ["Ünïcode revenue"]  # the same case as the title matches on any database

    both = ChatFilter(query="revenue", agent_identifier=AgentIdentifier.support)
    assert len(await walk(db, user_id, 1, flt=both)) == 3
    assert await walk(db, user_id, 1, flt=ChatFilter(query="revenue", agent_identifier=AgentIdentifier.general)) == []
    async with db.transaction() as tx:
        await tx.execute(
            sa.update(ai_chats).where(ai_chats.c.id == sa.bindparam("i")).values(activity_at=sa.bindparam("t")),
            {"i": made["Weekly Revenue Analysis"], "t": clock.now_ms() + 60_000},
        )
    recent = await walk(db, user_id, 1, order=ChatOrder.last_activity_at, flt=ChatFilter(query="Revenue"))
    assert recent == [made["Weekly Revenue Analysis"], made["Ünïcode revenue"], made["revenue_2024"]]
    backwards = await chats.list_chats(db, user_id, PageRequest(last=2), flt=ChatFilter(query="revenue"))
    assert [r["id"] for r in backwards.items] == [made["revenue_2024"], made["Weekly Revenue Analysis"]]
    assert backwards.page_info.has_previous_page
