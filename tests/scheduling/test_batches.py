"""A scheduling pass fires a batch of schedules at once: exactly once under concurrent
tickers, each message stamped when it is written, a constant number of statements and one
notification per channel per batch, whatever the batch's size."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

import orjson
import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.scheduling import loop, scheduler
from aichats.services import chats, events, runs, schedules, users
from aichats.services.chats import NewChat
from aichats.services.messages import NewMessage, create_chat, message_json
from aichats.storage import database
from aichats.storage.database import Database
from aichats.storage.schema import ai_chats, chat_events, messages
from aichats.storage.schema import runs as runs_table
from tests.scheduling.test_scheduler import NY, ms, scheduled_chat, scheduled_runs

pytestmark = pytest.mark.anyio
MINUTE = 60_000
START = ms(2026, 12, 7, 8)


async def scheduled_chats(db: Database, count: int, *, users_count: int = 3, every: int = 60) -> list[dict[str, Any]]:
    """``count`` chats over ``users_count`` users, each with its first message and a schedule
    every ``every`` seconds from the clock's now."""
    owners = [await users.create_user(db) for _ in range(users_count)]
    made = []
    for n in range(count):
        async with db.transaction() as tx:
            chat = await create_chat(tx, owners[n % users_count], NewChat(NewMessage(f"setup {n}")))
        data = schedules.ScheduleSpec(prompt=f"Report {n} for {{{{date}}}}", timezone="UTC", interval_seconds=every)
        await schedules.put_schedule(db, chat["pk"], data, min_interval_seconds=60)
        made.append(chat)
    return made


def by_chat(rows: list[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for row in rows:
        out.setdefault(row["chat_pk"], []).append(row)
    return out


async def test_three_concurrent_tickers_fire_every_instant_exactly_once(
    db: Database, database_url: str, backend: str
) -> None:
    """90 chats due every minute, three rounds, each fired by three schedulers at once in
    batches of 7 (13 batches a round between them): every chat gets exactly one prompt, one
    pending reply, one queued run and one ``message.created`` event per instant, in order,
    counted on the chat; a deleted chat's schedule is turned off without firing."""
    clock.set_clock(lambda: START)
    made = await scheduled_chats(db, 91)
    deleted, live = made[-1], made[:-1]
    await chats.delete_chat(db, deleted["user_id"], deleted["id"])
    tickers = [await database.connect(database_url, pool_size=3) for _ in range(3)]
    rounds = 3
    try:
        for n in range(1, rounds + 1):
            now = START + n * MINUTE + 1
            clock.set_clock(lambda now=now: now)
            results = await asyncio.gather(
                *(scheduler.tick(t, max_in_flight=100_000, now=now, batch_size=7) for t in tickers)
            )
            assert sum(r.fired for r in results) == len(live), n
            assert not any(r.skipped_for_limit for r in results)
            if backend == "postgresql" and n == 1:  # they really ran at once: the work was shared
                assert sum(r.fired > 0 for r in results) >= 2, [r.fired for r in results]
    finally:
        for ticker in tickers:
            await ticker.close()
    instants = [START + n * MINUTE for n in range(1, rounds + 1)]

    scheduled = by_chat(list(await db.fetch_all(
        sa.select(runs_table.c.chat_pk, runs_table.c.scheduled_for, runs_table.c.status, runs_table.c.user_message_pk,
                  runs_table.c.assistant_message_pk, runs_table.c.created_at)
        .where(runs_table.c.trigger == "schedule").order_by(runs_table.c.pk)
    )))  # fmt: skip
    stored = by_chat(list(await db.fetch_all(sa.select(messages).order_by(messages.c.pk))))
    created = by_chat(list(await db.fetch_all(
        sa.select(chat_events.c.chat_pk, chat_events.c.data, chat_events.c.created_at)
        .where(chat_events.c.type == events.MESSAGE_CREATED).order_by(chat_events.c.pk)
    )))  # fmt: skip
    counted = {r["pk"]: r for r in await db.fetch_all(sa.select(ai_chats))}
    assert set(scheduled) == {chat["pk"] for chat in live}
    for chat in live:
        pk = chat["pk"]
        assert [(r["scheduled_for"], r["status"]) for r in scheduled[pk]] == [(at, "queued") for at in instants]
        rows = stored[pk]
        assert [(m["role"], m["status"]) for m in rows] == [("user", "completed"), ("assistant", "pending")] * (
            1 + rounds
        )
        prompts = rows[2::2]
        assert [m["source"] for m in prompts] == ["schedule"] * rounds
        assert {m["content"] for m in prompts} == {f"Report {made.index(chat)} for 2026-12-07"}
        assert [(r["user_message_pk"], r["assistant_message_pk"]) for r in scheduled[pk]] == [
            (m["pk"], reply["pk"]) for m, reply in zip(rows[2::2], rows[3::2], strict=True)
        ]  # each turn answers its own prompt into its own pending reply
        assert [r["created_at"] for r in scheduled[pk]] == [m["created_at"] for m in prompts]
        shown = [orjson.loads(e["data"]) for e in created[pk]]
        assert shown == [message_json(m, chat["id"]) for m in rows[0::2]]  # the setup message, then one per fire
        assert counted[pk]["message_count"] == 1 + rounds
        assert counted[pk]["last_message_at"] == prompts[-1]["created_at"]
        assert counted[pk]["has_active_cron"]
    assert deleted["pk"] not in scheduled and len(stored[deleted["pk"]]) == 2
    gone = await schedules.get_schedule(db, deleted["pk"])
    assert not gone["active"] and gone["next_run_at"] is None and not counted[deleted["pk"]]["has_active_cron"]


def fired_by_passes(instants: list[int], passes: list[int]) -> list[int]:
    """What passes at ``passes`` fire of a schedule's ``instants``: at each pass, the latest
    instant due since the pass before (one catch-up run for any number missed)."""
    fired, before = [], -1
    for at in passes:
        due = [instant for instant in instants if before < instant <= at]
        if due:
            fired.append(due[-1])
        before = at
    return fired


@pytest.mark.parametrize(
    "start, cron, local_fires",
    [
        # 2026-03-08 02:30 does not exist in New York: that day's fire is cron's 03:00.
        (ms(2026, 3, 6, 12), "30 2 * * *", [(7, 2, 30), (8, 3, 0), (9, 2, 30)]),
        # 2026-11-01 01:30 happens twice: it fires once.
        (ms(2026, 10, 30, 12), "30 1 * * *", [(31, 1, 30), (1, 1, 30), (2, 1, 30)]),
    ],
)
async def test_three_tickers_fire_daylight_saving_and_catch_up_once(
    db: Database, database_url: str, start: int, cron: str, local_fires: list[tuple[int, int, int]]
) -> None:
    """Passes every 30 minutes for three days across a clock change in New York, each run by
    three schedulers at once, with a ten-hour outage on the second day (no pass at all): the
    daily cron fires cron's own instants, each once, and the hourly schedule fires every
    hour once, the outage's missed hours as one catch-up run, the latest of them."""
    daily = await scheduled_chat(db, start, cron=cron)
    hourly = await scheduled_chat(db, start, interval_seconds=3600)
    outage = (start + 40 * 3_600_000, start + 50 * 3_600_000)
    passes = [at for k in range(1, 3 * 48 + 1) if not outage[0] <= (at := start + k * 30 * MINUTE + 7) <= outage[1]]
    tickers = [await database.connect(database_url, pool_size=3) for _ in range(3)]
    try:
        for now in passes:
            clock.set_clock(lambda now=now: now)
            await asyncio.gather(*(scheduler.tick(t, max_in_flight=100, now=now, batch_size=1) for t in tickers))
    finally:
        for ticker in tickers:
            await ticker.close()
    shown = [
        (local.day, local.hour, local.minute)
        for local in (datetime.fromtimestamp(r["scheduled_for"] / 1000, NY) for r in await scheduled_runs(db, daily))
    ]
    assert shown == local_fires
    hours = [start + n * 3_600_000 for n in range(1, 3 * 24 + 1)]
    expected = fired_by_passes(hours, passes)
    assert [r["scheduled_for"] for r in await scheduled_runs(db, hourly)] == expected
    assert len(expected) == 3 * 24 - 10  # eleven hours fell due during the outage: the latest fired


async def test_fired_messages_carry_the_time_they_were_written(db: Database) -> None:
    """Regression: every message of a pass carried the instant the pass began, even when the
    pass took a minute. Here the clock moves 20 s each time it is read: the five prompts,
    fired in batches of two, carry their own batch's write time, later than the pass's start,
    as do their runs, their events and their chats' ``last_message_at``."""
    clock.set_clock(lambda: START)
    made = await scheduled_chats(db, 5)
    readings = itertools.count(START + MINUTE + 1, 20_000)
    passes: list[int] = []

    def moving() -> int:
        reading = next(readings)
        passes.append(reading)
        return reading

    clock.set_clock(moving)
    result = await scheduler.tick(db, max_in_flight=100, batch_size=2)
    clock.set_clock(lambda: START)
    assert result.fired == 5
    began = passes[0]
    prompts = list(await db.fetch_all(
        sa.select(messages.c.chat_pk, messages.c.id, messages.c.created_at, messages.c.completed_at)
        .where(messages.c.source == "schedule").order_by(messages.c.pk)
    ))  # fmt: skip
    stamps = [m["created_at"] for m in prompts]
    assert len(stamps) == 5 and min(stamps) > began
    assert sorted(Counter(stamps).values()) == [1, 2, 2]  # one time per batch of (up to) two
    assert all(m["completed_at"] == m["created_at"] for m in prompts)
    fired = {r["user_message_pk"]: r for r in await db.fetch_all(sa.select(runs_table))}
    rows = {m["id"]: m for m in await db.fetch_all(sa.select(messages.c.id, messages.c.pk, messages.c.created_at))}
    for prompt in prompts:
        run = fired[rows[prompt["id"]]["pk"]]
        assert run["created_at"] == prompt["created_at"] and run["scheduled_for"] == START + MINUTE
    shown = {
        orjson.loads(e["data"])["id"]: e["created_at"]
        for e in await db.fetch_all(sa.select(chat_events.c.data, chat_events.c.created_at))
    }
    assert all(shown[p["id"]] == p["created_at"] for p in prompts)
    last = {
        r["pk"]: r["last_message_at"] for r in await db.fetch_all(sa.select(ai_chats.c.pk, ai_chats.c.last_message_at))
    }
    assert all(last[p["chat_pk"]] == p["created_at"] for p in prompts)
    assert {p["chat_pk"] for p in prompts} == {chat["pk"] for chat in made}


class Recording:
    """A database recording every statement and notification of its transactions."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = db.dialect
        self.statements: list[Any] = []
        self.notified: list[tuple[str, str]] = []
        self.transactions = 0

    async def fetch_one(self, statement: Any, params: Any = None) -> Any:
        return await self.db.fetch_one(statement, params or {})

    async def fetch_all(self, statement: Any, params: Any = None) -> Any:
        return await self.db.fetch_all(statement, params or {})

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        self.transactions += 1
        async with self.db.transaction() as tx:
            yield _RecordingConnection(tx, self)


class _RecordingConnection:
    def __init__(self, tx: Any, log: Recording) -> None:
        self.tx, self.log = tx, log

    async def fetch_one(self, statement: Any, params: Any = None) -> Any:
        self.log.statements.append(statement)
        return await self.tx.fetch_one(statement, params or {})

    async def fetch_all(self, statement: Any, params: Any = None) -> Any:
        self.log.statements.append(statement)
        return await self.tx.fetch_all(statement, params or {})

    async def execute(self, statement: Any, params: Any = None) -> int:
        self.log.statements.append(statement)
        return int(await self.tx.execute(statement, params or {}))

    async def notify(self, channel: str, payload: str) -> None:
        self.log.notified.append((channel, payload))
        await self.tx.notify(channel, payload)


async def test_a_batch_costs_the_same_statements_and_one_notification_per_channel_whatever_its_size(
    db: Database,
) -> None:
    """Three schedules, then thirty-three, each fired in one batch: the same statements, in
    one transaction, and one notification on each channel naming every fired chat."""
    clock.set_clock(lambda: START)
    first = await scheduled_chats(db, 3, every=3600)
    clock.set_clock(lambda: START + 10 * 3_600_000)
    second = await scheduled_chats(db, 30, every=3600)
    seen = []
    for now, fired in [(START + 3_600_000 + 1, first), (START + 11 * 3_600_000 + 1, first + second)]:
        recording = Recording(db)
        result = await scheduler.tick(cast(Database, recording), max_in_flight=1000, now=now, parallel=1)
        assert result.fired == len(fired) and recording.transactions == 1
        keys = {str(chat["pk"]) for chat in fired}
        channels = Counter(channel for channel, _ in recording.notified)
        assert channels == {events.CHANNEL: 1, runs.CHANNEL: 1}
        assert all(set(payload.split(events.KEY_SEPARATOR)) == keys for _, payload in recording.notified)
        seen.append([type(s).__name__ for s in recording.statements])
    assert seen[0] == seen[1] and len(seen[0]) <= 8, seen


async def test_the_readers_of_every_fired_chat_are_woken_and_no_others(db: Database) -> None:
    """One notification names the batch's chats: the event stream of each is woken (from
    another process on PostgreSQL), that of a chat that did not fire is not."""
    clock.set_clock(lambda: START)
    made = await scheduled_chats(db, 4, every=3600)
    quiet = made.pop()
    await schedules.set_active(db, quiet["pk"], False)
    hub: events.EventHub[int] = events.EventHub()
    await hub.attach(db)
    woken = {chat["pk"]: hub.subscribe(chat["pk"]) for chat in [*made, quiet]}
    assert (await scheduler.tick(db, max_in_flight=100, now=START + 3_600_000 + 1)).fired == 3
    await asyncio.wait_for(asyncio.gather(*(woken[chat["pk"]].wait() for chat in made)), timeout=10)
    await asyncio.sleep(0.2)
    assert not woken[quiet["pk"]].is_set()


class _Notifications:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def notify(self, channel: str, payload: str) -> None:
        self.sent.append((channel, payload))


async def test_many_keys_are_cut_into_payloads_postgresql_accepts() -> None:
    tx = _Notifications()
    keys = [10**12 + n for n in range(2000)]  # 26,000 bytes of keys
    await events.notify_keys(cast(Any, tx), "c", [*keys, keys[0]])
    assert len(tx.sent) == 4 and all(len(p.encode()) < 8000 for _, p in tx.sent)
    assert [int(k) for _, p in tx.sent for k in p.split(events.KEY_SEPARATOR)] == keys  # each once, in order


def test_passes_come_just_after_each_multiple_of_the_interval() -> None:
    """On the second (cron instants fall on whole minutes), not a second from whenever the
    process started."""
    past = loop.PAST_THE_INSTANT_SECONDS
    for interval, now, wait in [
        (1.0, 1_796_000_000.3, 0.7),
        (1.0, 1_796_000_000.999, 0.001),
        (5.0, 1_796_000_002.0, 3.0),
    ]:
        assert loop.until_next_pass(interval, now) == pytest.approx(wait + past, abs=1e-6)
