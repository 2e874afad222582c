"""Daily token budgets: usage counted per user and UTC day where replies are accounted,
budgets (the default, a user's own, none), the batch check a scheduling pass makes, and the
API's check with its cache of unlimited users."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.errors import NotFound, TokenBudgetExceeded
from aichats.services import budgets, chats, notifications, users
from aichats.services.budgets import DAY_MS, MICROS, Budgets
from aichats.services.chats import ChatChanges, NewChat, NotificationPreference
from aichats.services.messages import NewMessage, create_chat
from aichats.services.pagination import PageRequest
from aichats.storage import database
from aichats.storage.database import Database
from aichats.storage.schema import token_budgets
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio

NOON = 20_000 * DAY_MS + DAY_MS // 2  # 2024-10-04T12:00:00Z


async def chat_of(db: Database, user_id: str) -> dict:
    async with db.transaction() as tx:
        return dict(await create_chat(tx, user_id, NewChat(NewMessage("hello"))))


async def used(db: Database, user_id: str, tokens: int, at: int, chat: dict | None = None) -> dict:
    """``tokens`` blended tokens used by a reply of ``user_id``'s chat at ``at``, accounted as
    replies account them (:func:`chats.add_usage`)."""
    chat = chat or await chat_of(db, user_id)
    async with db.transaction() as tx:
        await chats.add_usage(tx, chat["pk"], tokens * MICROS, at)
    return chat


async def test_usage_is_counted_per_user_and_utc_day(db: Database) -> None:
    alice, bob = await users.create_user(db), await users.create_user(db)
    chat = await used(db, alice, 100, NOON)
    await used(db, alice, 50, NOON + 1000, chat)  # the same chat
    await used(db, alice, 7, NOON - 1000)  # another chat, the same day
    await used(db, alice, 1000, NOON + DAY_MS)  # tomorrow
    await used(db, bob, 3, NOON)
    await used(db, bob, 0, NOON)  # nothing used: nothing written
    found = await budgets.standings(db, [alice, bob, alice], now=NOON, default=None)
    assert found[alice].used_micros == 157 * MICROS and found[bob].used_micros == 3 * MICROS
    tomorrow = await budgets.standings(db, [alice], now=NOON + DAY_MS, default=None)
    assert tomorrow[alice].used_micros == 1000 * MICROS
    midnight = (NOON // DAY_MS + 1) * DAY_MS
    assert budgets.resets_at(NOON) == midnight and budgets.day_of(midnight - 1) + 1 == budgets.day_of(midnight)


async def test_budgets_default_own_and_unlimited(db: Database) -> None:
    a, b, c, d = [await users.create_user(db) for _ in range(4)]
    await used(db, a, 100, NOON)
    await used(db, b, 99, NOON)
    await used(db, c, 500, NOON)
    await budgets.set_budget(db, c, None)  # c: no limit, whatever the default
    await budgets.set_budget(db, d, 0)  # d: nothing at all, without having used anything
    found = await budgets.standings(db, [a, b, c, d], now=NOON, default=100)
    assert [found[u].budget for u in (a, b, c, d)] == [100, 100, None, 0]
    assert [found[u].over for u in (a, b, c, d)] == [True, False, False, True]
    assert found[b].remaining_micros == 1 * MICROS and found[c].remaining_micros is None
    assert await budgets.over_budget(db, [a, b, c, d], now=NOON, default=100) == {a, d}
    assert await budgets.over_budget(db, [a, b, c, d], now=NOON, default=None) == {d}
    assert await budgets.over_budget(db, [a, b, c, d], now=NOON + DAY_MS, default=100) == {d}  # a new day
    assert await budgets.over_budget(db, [], now=NOON, default=0) == set()

    await budgets.set_budget(db, a, 1000)
    assert (await budgets.own_budget(db, a)) == budgets.OwnBudget(True, 1000)
    assert a not in await budgets.over_budget(db, [a], now=NOON, default=100)
    await budgets.clear_budget(db, a)
    assert (await budgets.own_budget(db, a)) == budgets.OwnBudget(False, None)
    assert a in await budgets.over_budget(db, [a], now=NOON, default=100)
    with pytest.raises(NotFound):
        await budgets.set_budget(db, "user_nobody", 5)


async def test_the_check_refuses_a_user_over_budget_with_retry_after(db: Database) -> None:
    user_id = await users.create_user(db)
    clock.set_clock(lambda: NOON)
    check = Budgets(default=10)
    await check.check(db, user_id)  # nothing used yet
    await used(db, user_id, 10, NOON)
    with pytest.raises(TokenBudgetExceeded) as refused:
        await check.check(db, user_id)
    assert refused.value.status == 429 and refused.value.type == "token_budget_exceeded"
    assert refused.value.headers == {"Retry-After": str(DAY_MS // 2 // 1000)}
    assert "10 blended tokens" in refused.value.message and "2024-10-05T00:00:00.000Z" in refused.value.message


async def test_unlimited_users_are_cached_until_a_budget_changes_in_another_process(
    db: Database, database_url: str
) -> None:
    """A user without a limit is not read again at every turn, yet a budget set by another
    process (the CLI) applies at the next turn: the change's notification empties the cache."""
    user_id = await users.create_user(db)
    await used(db, user_id, 50, clock.now_ms())
    check = Budgets(default=None)
    await check.attach(db)
    await asyncio.sleep(0.05)  # SQLite's watch of other processes' commits takes its first look
    await check.check(db, user_id)  # unlimited: remembered
    # A budget written behind the service's back (no notification) is not seen: the cache answers.
    async with db.transaction() as tx:
        await tx.execute(sa.insert(token_budgets).values(user_id=user_id, tokens_per_day=10, updated_at=0))
    await check.check(db, user_id)
    other = await database.connect(database_url, pool_size=1)
    try:
        await budgets.set_budget(other, user_id, 10)  # as the CLI does: with its notification
    finally:
        await other.close()

    async def refused() -> bool:
        try:
            await check.check(db, user_id)
        except TokenBudgetExceeded:
            return True
        return False

    assert await eventually(refused, timeout=3.0)


async def test_a_skipped_scheduled_run_notifies_once_until_read(db: Database) -> None:
    """What a scheduling pass calls for a user :func:`budgets.over_budget` names: the owner is
    told once, not at every skipped run, until they read it; a muted chat tells nothing."""
    user_id = await users.create_user(db)
    chat = await chat_of(db, user_id)
    body = budgets.skipped_run_notice(NOON)
    assert "2024-10-05T00:00:00.000Z" in body
    for _ in range(2):
        async with db.transaction() as tx:
            current = await chats.current_chat(tx, chat["pk"])
            await notifications.schedule_skipped(tx, current, body=body)
    page, unread = await notifications.list_notifications(db, user_id, PageRequest(first=10))
    assert [(n["kind"], n["body"]) for n in page.items] == [("ai_chat.schedule.skipped", body)] and unread == 1
    await notifications.read_chat(db, user_id, chat["pk"])
    async with db.transaction() as tx:
        assert await notifications.schedule_skipped(tx, await chats.current_chat(tx, chat["pk"]), body=body)
    await chats.update_chat(db, user_id, chat["id"], ChatChanges(notification_preference=NotificationPreference.none))
    await notifications.read_chat(db, user_id, chat["pk"])
    async with db.transaction() as tx:
        assert not await notifications.schedule_skipped(tx, await chats.current_chat(tx, chat["pk"]), body=body)
    assert (await notifications.list_notifications(db, user_id, PageRequest(first=10)))[1] == 0
