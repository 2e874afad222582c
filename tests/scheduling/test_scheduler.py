"""Schedules fire once per instant, in their time zone, with one catch-up after downtime."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import orjson
import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.errors import Invalid
from aichats.scheduling import scheduler
from aichats.services import chats, notifications, schedules, users, webhooks
from aichats.services.chats import ChatFilter, NewChat
from aichats.services.messages import NewMessage, create_chat, list_messages
from aichats.services.pagination import PageRequest
from aichats.storage import database
from aichats.storage.database import Database
from aichats.storage.schema import runs, webhook_deliveries
from tests.runs.test_worker import CountingDatabase, drain, make_worker

pytestmark = pytest.mark.anyio
NY = ZoneInfo("America/New_York")


def ms(year: int, month: int, day: int, hour: int, minute: int = 0, tz: ZoneInfo = NY) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=tz).timestamp() * 1000)


async def scheduled_chat(db: Database, at: int, **schedule: Any) -> dict[str, Any]:
    clock.set_clock(lambda: at)
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage("setup"), title="Report"))
    data = schedules.ScheduleSpec(
        **{"prompt": "Weekly report for {{date}}", "timezone": "America/New_York", **schedule}
    )
    await schedules.put_schedule(db, chat["pk"], data, min_interval_seconds=60)
    return chat


async def scheduled_runs(db: Database, chat: dict[str, Any]) -> list[Any]:
    statement = (
        sa.select(runs.c.scheduled_for, runs.c.status)
        .where(runs.c.chat_pk == sa.bindparam("c"), runs.c.trigger == "schedule")
        .order_by(runs.c.pk)
    )
    return list(await db.fetch_all(statement, {"c": chat["pk"]}))


async def test_a_cron_fire_lands_prompt_and_reply(db: Database) -> None:
    monday_9 = ms(2026, 11, 30, 9)  # a Monday
    chat = await scheduled_chat(db, ms(2026, 11, 27, 12), cron="0 9 * * 1")
    row = await schedules.get_schedule(db, chat["pk"])
    assert row["next_run_at"] == monday_9
    body = schedules.schedule_json(row, chat["id"])
    assert "09:00" in body["description"] and "Monday" in body["description"]
    assert body["next_run_times"][:2] == [clock.isoformat_ms(monday_9), clock.isoformat_ms(ms(2026, 12, 7, 9))]

    await scheduler.tick(db, max_in_flight=100, now=monday_9 - 1)
    assert await scheduled_runs(db, chat) == []
    await scheduler.tick(db, max_in_flight=100, now=monday_9 + 500)
    assert [r["scheduled_for"] for r in await scheduled_runs(db, chat)] == [monday_9]
    clock.set_clock(lambda: monday_9 + 1000)
    assert await drain(make_worker(db)) == 2  # the chat's first message, then the scheduled turn
    items = (await list_messages(db, chat["pk"], PageRequest(first=100))).items
    prompt, reply = items[-2], items[-1]
    assert (prompt["role"], prompt["source"], prompt["content"]) == ("user", "schedule", "Weekly report for 2026-11-30")
    assert reply["role"] == "assistant" and reply["status"] == "completed"
    assert reply["content"] == "You said: Weekly report for 2026-11-30"
    after = await schedules.get_schedule(db, chat["pk"])
    assert after["next_run_at"] == ms(2026, 12, 7, 9) and after["last_run_at"] == monday_9


async def test_each_instant_fires_exactly_once_across_schedulers(db: Database, database_url: str) -> None:
    chat = await scheduled_chat(db, ms(2026, 11, 27, 12), cron="*/5 * * * *")
    due = (await schedules.get_schedule(db, chat["pk"]))["next_run_at"]
    others = [await database.connect(database_url, pool_size=2) for _ in range(3)]
    try:
        results = await asyncio.gather(*(scheduler.tick(d, max_in_flight=1000, now=due + 1) for d in [db, *others]))
    finally:
        for other in others:
            await other.close()
    assert [r["scheduled_for"] for r in await scheduled_runs(db, chat)] == [due]
    assert sum(r.fired for r in results) >= 1
    await scheduler.tick(db, max_in_flight=1000, now=due + 2)
    assert [r["scheduled_for"] for r in await scheduled_runs(db, chat)] == [due]


async def test_downtime_gives_one_catch_up_run(db: Database) -> None:
    start = ms(2026, 11, 27, 12)
    chat = await scheduled_chat(db, start, interval_seconds=3600)
    ten_hours_later = start + 10 * 3_600_000 + 60_000
    await scheduler.tick(db, max_in_flight=100, now=ten_hours_later)
    fired = await scheduled_runs(db, chat)
    assert [r["scheduled_for"] for r in fired] == [start + 10 * 3_600_000]  # the latest missed instant
    assert (await schedules.get_schedule(db, chat["pk"]))["next_run_at"] == start + 11 * 3_600_000


def walk(expression: str, start: int, count: int) -> list[datetime]:
    row = {
        "timezone": "America/New_York",
        "cron": expression,
        "run_at": None,
        "interval_seconds": None,
        "created_at": 0,
    }
    return [datetime.fromtimestamp(t / 1000, NY) for t in schedules.fires_after(row, start, count)]


def test_daylight_saving_neither_skips_nor_doubles() -> None:
    spring = walk("30 2 * * *", ms(2026, 3, 6, 12), 4)  # 2026-03-08 02:30 does not exist in New York
    assert [(t.day, t.hour, t.minute) for t in spring] == [(7, 2, 30), (8, 3, 0), (9, 2, 30), (10, 2, 30)]
    autumn = walk("30 1 * * *", ms(2026, 10, 30, 12), 4)  # 2026-11-01 01:30 happens twice
    assert [(t.day, t.hour, t.minute) for t in autumn] == [(31, 1, 30), (1, 1, 30), (2, 1, 30), (3, 1, 30)]
    nine = walk("0 9 * * *", ms(2026, 3, 6, 12), 4) + walk("0 9 * * *", ms(2026, 10, 30, 12), 4)
    assert {(t.hour, t.minute) for t in nine} == {(9, 0)}
    assert len({t.utcoffset() for t in nine}) == 2  # the same local hour across both offsets


async def test_repeated_failures_deactivate_the_schedule(db: Database) -> None:
    start = ms(2026, 11, 27, 12)
    chat = await scheduled_chat(db, start, interval_seconds=60)
    worker = make_worker(db, model="test:fail", schedule_max_failures=3)
    for n in range(1, 4):
        await scheduler.tick(db, max_in_flight=100, now=start + n * 60_000 + 1)
        assert len(await scheduled_runs(db, chat)) == n
        assert await drain(worker) == (2 if n == 1 else 1)  # the first with the chat's first message
    row = await schedules.get_schedule(db, chat["pk"])
    assert not row["active"] and row["consecutive_failures"] == 3
    listed = await chats.list_chats(db, chat["user_id"], PageRequest(), flt=ChatFilter(only_active_crons=True))
    assert listed.items == []
    await scheduler.tick(db, max_in_flight=100, now=start + 10 * 60_000)
    assert len(await scheduled_runs(db, chat)) == 3


async def test_a_success_ends_a_run_of_failures(db: Database) -> None:
    """Failures count only in a row: fail, succeed, fail (limit 2) leaves the schedule on."""
    start = ms(2026, 11, 27, 12)
    chat = await scheduled_chat(db, start, interval_seconds=60)
    failing = make_worker(db, "failing", model="test:fail", schedule_max_failures=2)
    answering = make_worker(db, "answering", model="test:echo", schedule_max_failures=2)
    for n, worker, failures in [(1, failing, 1), (2, answering, 0), (3, failing, 1)]:
        await scheduler.tick(db, max_in_flight=100, now=start + n * 60_000 + 1)
        assert await drain(worker) == (2 if n == 1 else 1)
        row = await schedules.get_schedule(db, chat["pk"])
        assert row["active"] and row["consecutive_failures"] == failures, n
    assert [r["status"] for r in await scheduled_runs(db, chat)] == ["failed", "completed", "failed"]


async def test_a_finished_reply_reads_its_chat_and_its_webhooks_once(db: Database) -> None:
    """The widest "reply finished" step: a scheduled turn fails and turns its schedule off,
    four webhook events and two notifications, from one read of the chat (besides the
    turn's start) and one read of the user's webhooks, in the order they happened."""
    start = ms(2026, 11, 27, 12)
    chat = await scheduled_chat(db, start, interval_seconds=60)
    every = webhooks.NewWebhook(url="http://127.0.0.1:9/", events=tuple(webhooks.EVENTS))
    await webhooks.create_webhook(db, chat["user_id"], every, allow_private=True)
    assert await drain(make_worker(db)) == 1  # the chat's first message
    await scheduler.tick(db, max_in_flight=100, now=start + 60_001)
    counting = CountingDatabase(db)
    failing = make_worker(cast(Database, counting), model="test:fail", schedule_max_failures=1)
    assert await drain(failing) == 1
    assert not (await schedules.get_schedule(db, chat["pk"]))["active"]

    def times(statement: Any) -> int:
        return sum(1 for s in counting.statements if s is statement)

    assert times(webhooks._SUBSCRIBED) == 1
    assert (times(chats._TURN_CHAT), times(chats._CURRENT)) == (1, 1)
    deliveries = await db.fetch_all(sa.select(webhook_deliveries.c.event_type).order_by(webhook_deliveries.c.pk))
    assert [d["event_type"] for d in deliveries] == [
        "ai_chat.message.completed", "notification.created",  # the first reply
        "ai_chat.run.failed", "notification.created", "ai_chat.schedule.deactivated", "notification.created",
    ]  # fmt: skip


async def test_one_shot_and_the_active_filter(db: Database) -> None:
    start = ms(2026, 11, 27, 12)
    chat = await scheduled_chat(db, start, run_at="2026-11-27T18:00:00Z")
    listed = await chats.list_chats(db, chat["user_id"], PageRequest(), flt=ChatFilter(only_active_crons=True))
    assert [r["id"] for r in listed.items] == [chat["id"]]
    await scheduler.tick(db, max_in_flight=100, now=ms(2026, 11, 27, 18, tz=ZoneInfo("UTC")) + 1)
    assert len(await scheduled_runs(db, chat)) == 1
    row = await schedules.get_schedule(db, chat["pk"])
    assert not row["active"] and row["next_run_at"] is None


@pytest.mark.parametrize(
    "fields, says",
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "5 fields"),
        ({"cron": "0 9 * * 1", "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval_seconds": 10}, "at least 60"),
        ({"run_at": "2020-01-01T00:00:00Z"}, "past"),
        ({"run_at": "soon"}, "ISO 8601"),
    ],
)
async def test_invalid_schedules_store_nothing(db: Database, fields: dict[str, Any], says: str) -> None:
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage("x")))
    data = schedules.ScheduleSpec(**{"prompt": "p", "timezone": "America/New_York", **fields})
    with pytest.raises(Invalid, match=says):
        await schedules.put_schedule(db, chat["pk"], data, min_interval_seconds=60)
    with pytest.raises(Exception, match="no schedule"):
        await schedules.get_schedule(db, chat["pk"])


async def test_the_in_flight_limit_defers_fires(db: Database) -> None:
    start = ms(2026, 12, 2, 12)
    first = await scheduled_chat(db, start, interval_seconds=60)
    second = await scheduled_chat(db, start, interval_seconds=60)
    busy = await db.fetch_one(
        sa.select(sa.func.count().label("n")).where(
            runs.c.trigger == "schedule", sa.text("status IN ('queued', 'running')")
        )
    )
    assert busy is not None
    result = await scheduler.tick(db, max_in_flight=busy["n"] + 1, now=start + 60_001)
    assert result.skipped_for_limit and result.fired == 1
    fired = len(await scheduled_runs(db, first)) + len(await scheduled_runs(db, second))
    assert fired <= 1  # at most one of them fired; the rest wait for a later pass


async def test_an_instant_that_already_has_a_turn_is_skipped_alone(db: Database) -> None:
    start = ms(2026, 12, 3, 12)
    stuck = await scheduled_chat(db, start, interval_seconds=3600)
    other = await scheduled_chat(db, start, interval_seconds=3600)
    due = (await schedules.get_schedule(db, stuck["pk"]))["next_run_at"]
    async with db.transaction() as tx:  # as if a scheduler queued the turn but never advanced
        await tx.execute(
            sa.insert(runs).values(
                id="airun_preexisting" + str(stuck["pk"]), chat_pk=stuck["pk"], trigger="schedule", status="completed",
                scheduled_for=due, created_at=start,
            )
        )  # fmt: skip
    await scheduler.tick(db, max_in_flight=100_000, now=due + 1)
    assert [r["scheduled_for"] for r in await scheduled_runs(db, stuck)] == [due]
    assert [r["scheduled_for"] for r in await scheduled_runs(db, other)] == [due]
    assert (await schedules.get_schedule(db, stuck["pk"]))["next_run_at"] == due + 3_600_000


MINUTE = 60_000


async def test_catch_up_after_years_of_downtime_fires_the_latest_instant_once(db: Database) -> None:
    start = ms(2026, 11, 27, 12)
    every_minute = await scheduled_chat(db, start, cron="* * * * *")
    every_hour = await scheduled_chat(db, start, interval_seconds=3600)
    later = start + 2 * 366 * 24 * 3_600_000 + 30_000  # two years: over a million missed minutes
    await scheduler.tick(db, max_in_flight=100, now=later)
    assert [r["scheduled_for"] for r in await scheduled_runs(db, every_minute)] == [later - 30_000]
    assert (await schedules.get_schedule(db, every_minute["pk"]))["next_run_at"] == later - 30_000 + MINUTE
    assert [r["scheduled_for"] for r in await scheduled_runs(db, every_hour)] == [later - 30_000]
    assert (await schedules.get_schedule(db, every_hour["pk"]))["next_run_at"] == later - 30_000 + 3_600_000


async def test_catch_up_over_daylight_saving_fires_cron_s_own_instant(db: Database) -> None:
    chat = await scheduled_chat(db, ms(2025, 12, 8, 12), cron="30 2 * * *")  # 90 days before a spring forward
    await scheduler.tick(db, max_in_flight=100, now=ms(2026, 3, 8, 3, 10))  # 02:30 did not exist: it ran at 03:00
    assert [r["scheduled_for"] for r in await scheduled_runs(db, chat)] == [ms(2026, 3, 8, 3, 0)]
    assert (await schedules.get_schedule(db, chat["pk"]))["next_run_at"] == ms(2026, 3, 9, 2, 30)


def _walk_latest(row: dict[str, Any], now: int) -> int:
    """The catch-up instant by walking every instant (the old way): the reference."""
    fire = row["next_run_at"]
    while (following := schedules.fires_after(row, fire)) and following[0] <= now:
        fire = following[0]
    return fire


@pytest.mark.parametrize("expression", ["30 2 * * *", "30 1 * * *", "0 9 * * 1-5", "*/20 * * * *", "0 */3 * * *"])
def test_the_catch_up_instant_is_the_walk_s_own(expression: str) -> None:
    shape = {"timezone": "America/New_York", "cron": expression, "run_at": None, "interval_seconds": None}
    for month, day in [(3, 6), (10, 30)]:  # two days before each of 2026's New York transitions
        row = {
            **shape,
            "created_at": 0,
            "next_run_at": schedules.fires_after({**shape, "created_at": 0}, ms(2026, month, day, 0))[0],
        }
        for step in range(0, 4 * 24 * 60, 7):  # every 7 minutes over four days around the change
            now = row["next_run_at"] + step * MINUTE + 13_000
            assert scheduler.latest_missed(row, now) == _walk_latest(row, now), (expression, now)


@pytest.mark.parametrize("broken", [{"cron": "every day"}, {"timezone": "Mars/Olympus"}, {"cron": "0 0 31 2 *"}])
async def test_a_schedule_that_cannot_be_computed_is_quarantined(db: Database, broken: dict[str, Any]) -> None:
    start = ms(2026, 12, 4, 12)
    healthy = await scheduled_chat(db, start, interval_seconds=3600)
    bad = await scheduled_chat(db, start, cron="0 13 * * *")
    hook = webhooks.NewWebhook(url="http://127.0.0.1:9/", events=("ai_chat.schedule.deactivated",))
    await webhooks.create_webhook(db, bad["user_id"], hook, allow_private=True)
    due = (await schedules.get_schedule(db, healthy["pk"]))["next_run_at"]
    async with db.transaction() as tx:  # as old data could be: stored before today's checks, first in line
        await tx.execute(
            sa.update(schedules.schedules).where(schedules.schedules.c.chat_pk == bad["pk"]).values(
                next_run_at=due - MINUTE, **broken
            )
        )  # fmt: skip
    for n in range(1, 3):
        await scheduler.tick(db, max_in_flight=100_000, now=due + (n - 1) * 3_600_000 + 1)
        assert len(await scheduled_runs(db, healthy)) == n  # the healthy one keeps firing
    assert await scheduled_runs(db, bad) == []
    row = await schedules.get_schedule(db, bad["pk"])
    assert not row["active"] and row["next_run_at"] is None and row["last_error"]
    body = schedules.schedule_json(row, bad["id"])  # still readable, with its error
    assert body["active"] is False and body["last_error"] == row["last_error"] and body["next_run_times"] == []
    listed = await chats.list_chats(db, bad["user_id"], PageRequest(), flt=ChatFilter(only_active_crons=True))
    assert listed.items == []
    page, unread = await notifications.list_notifications(db, bad["user_id"], PageRequest())
    assert [n["kind"] for n in page.items] == ["ai_chat.schedule.deactivated"] and unread == 1
    assert row["last_error"] in page.items[0]["body"]
    deliveries = await db.fetch_all(sa.select(webhook_deliveries.c.event_type, webhook_deliveries.c.payload))
    sent = [orjson.loads(d["payload"])["data"] for d in deliveries if d["event_type"] == "ai_chat.schedule.deactivated"]
    assert [d for d in sent if d["ai_chat_id"] == bad["id"]] == [
        {"ai_chat_id": bad["id"], "error": row["last_error"]}
    ]  # the webhook goes with the notification
    fixed = schedules.ScheduleSpec(prompt="p", timezone="UTC", cron="0 13 * * *")
    again = await schedules.put_schedule(db, bad["pk"], fixed, min_interval_seconds=60)
    assert again["active"] and again["last_error"] is None  # saving it again clears the error


async def test_no_instant_past_year_9999_is_emitted(db: Database) -> None:
    late = clock.parse_iso("9999-12-31T20:00:00Z")
    chat = await scheduled_chat(db, late, interval_seconds=3600)
    body = schedules.schedule_json(await schedules.get_schedule(db, chat["pk"]), chat["id"])
    assert body["next_run_times"] == [f"9999-12-31T{h}:00:00.000Z" for h in (21, 22, 23)]  # not 10000-01-01
    hourly = schedules.ScheduleSpec(timezone="UTC", cron="0 * * * *")
    assert len(schedules.preview(hourly, min_interval_seconds=60)["next_run_times"]) == 3
    for never in [
        {"interval_seconds": 86_400},
        {"cron": "0 0 * * *", "timezone": "UTC"},
        {"cron": "0 * * * *", "timezone": "Pacific/Kiritimati"},  # UTC+14: already year 10000 there
    ]:
        data = schedules.ScheduleSpec(**{"prompt": "p", "timezone": "America/New_York", **never})
        with pytest.raises(Invalid, match="no run left before year 10000"):
            await schedules.put_schedule(db, chat["pk"], data, min_interval_seconds=60)
        with pytest.raises(Invalid, match="no run left before year 10000"):
            schedules.preview(data, min_interval_seconds=60)
    assert (await schedules.get_schedule(db, chat["pk"]))["interval_seconds"] == 3600  # unchanged
    await scheduler.tick(db, max_in_flight=100_000, now=clock.parse_iso("9999-12-31T23:59:59.999Z"))
    row = await schedules.get_schedule(db, chat["pk"])
    assert not row["active"] and row["next_run_at"] is None and row["last_run_at"] == late + 3 * 3_600_000


async def test_an_interval_saved_again_counts_from_the_new_save(db: Database) -> None:
    start = ms(2026, 12, 4, 10, 20)
    chat = await scheduled_chat(db, start, interval_seconds=3600)
    clock.set_clock(lambda: start + 90 * MINUTE)  # saved again at 11:50, still hourly
    data = schedules.ScheduleSpec(prompt="p", timezone="UTC", interval_seconds=3600)
    row = await schedules.put_schedule(db, chat["pk"], data, min_interval_seconds=60)
    times = [clock.parse_iso(t) for t in schedules.schedule_json(row, chat["id"])["next_run_times"]]
    assert times[0] == start + 150 * MINUTE  # 12:50: an hour after the save
    assert {b - a for a, b in itertools.pairwise(times)} == {3_600_000}  # and hourly from there
    await scheduler.tick(db, max_in_flight=100_000, now=times[0] + 1)
    assert (await schedules.get_schedule(db, chat["pk"]))["next_run_at"] == times[1]


async def test_a_user_over_budget_has_scheduled_runs_skipped_and_is_told_once(db: Database) -> None:
    from aichats.services import budgets

    monday_9 = ms(2026, 11, 30, 9)
    chat = await scheduled_chat(db, ms(2026, 11, 27, 12), cron="0 9 * * 1")
    within = await scheduled_chat(db, ms(2026, 11, 27, 12), cron="0 9 * * 1")
    clock.set_clock(lambda: monday_9)
    async with db.transaction() as tx:  # the owner of `chat` used 1,000 tokens today
        await budgets.add_usage(tx, chat["user_id"], 1_000 * budgets.MICROS, monday_9)
    result = await scheduler.tick(db, max_in_flight=100, now=monday_9, budget=1_000)
    assert result.fired == 1  # only the other user's schedule
    assert await scheduled_runs(db, chat) == [] and len(await scheduled_runs(db, within)) == 1
    row = await schedules.get_schedule(db, chat["pk"])
    assert row["next_run_at"] == ms(2026, 12, 7, 9)  # the instant is spent, not retried
    page, _ = await notifications.list_notifications(db, chat["user_id"], PageRequest(first=10))
    assert [n["kind"] for n in page.items] == [notifications.SCHEDULE_SKIPPED]
    assert "daily token budget is used up" in page.items[0]["body"]

    # The next week, still over budget (their own, now): skipped again, told only once until read.
    await budgets.set_budget(db, chat["user_id"], 500)
    async with db.transaction() as tx:
        await budgets.add_usage(tx, chat["user_id"], 600 * budgets.MICROS, ms(2026, 12, 7, 9))
    clock.set_clock(lambda: ms(2026, 12, 7, 9))
    await scheduler.tick(db, max_in_flight=100, now=ms(2026, 12, 7, 9), budget=None)
    assert await scheduled_runs(db, chat) == []
    page, _ = await notifications.list_notifications(db, chat["user_id"], PageRequest(first=10))
    assert len(page.items) == 1
    assert len(await scheduled_runs(db, within)) == 2  # no budget applies to the other user
