"""Agent turns: claiming, streaming, accounting, titles, failures and lapsed leases.

Each test has a database of its own (``tests/conftest.py``), so a worker here sees only
the runs its test queued, and counts of turns are exact.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from aichats import clock
from aichats.config import Settings
from aichats.errors import Conflict, NotFound
from aichats.runs.turn import Models
from aichats.runs.worker import Worker, worker_name
from aichats.services import chats, events, runs, users
from aichats.services.chats import ChatChanges, NewChat
from aichats.services.messages import NewMessage, add_user_message, create_chat, list_messages
from aichats.services.pagination import PageRequest
from aichats.services.replies import generated_title
from aichats.services.replies import retry as retry_reply
from aichats.storage.database import Database
from aichats.storage.schema import chat_events
from aichats.storage.schema import runs as runs_table

pytestmark = pytest.mark.anyio


def make_worker(db: Database, name: str = "w1", **overrides: Any) -> Worker:
    settings = Settings(**{"model": "test:echo", "model_timeout_seconds": 5, **overrides})
    return Worker(db, settings, Models(settings), asyncio.Event(), name)


async def new_chat(db: Database, text: str = "hello there", **fields: Any) -> dict[str, Any]:
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        return await create_chat(tx, user_id, NewChat(NewMessage(text), **fields))


async def follow_up(db: Database, chat: dict[str, Any], text: str) -> None:
    async with db.transaction() as tx:
        await add_user_message(
            tx,
            user_id=chat["user_id"],
            chat_pk=chat["pk"],
            chat_id=chat["id"],
            data=NewMessage(text),
            now=clock.now_ms(),
        )


async def messages_of(db: Database, chat: dict[str, Any]) -> list[Any]:
    return list((await list_messages(db, chat["pk"], PageRequest(first=100))).items)


async def drain(worker: Worker) -> int:
    done = 0
    while await worker.run_one():
        done += 1
    return done


async def test_a_turn_streams_completes_and_is_accounted(db: Database) -> None:
    chat = await new_chat(db, "What is the weekly revenue?")
    assert await drain(make_worker(db)) == 1
    user, reply = await messages_of(db, chat)
    assert (user["role"], user["status"]) == ("user", "completed")
    assert reply["role"] == "assistant" and reply["status"] == "completed"
    assert reply["content"] == "You said: What is the weekly revenue?"
    assert reply["model"] == "test:echo" and reply["output_tokens"] == 7
    assert reply["input_tokens"] > 5  # the system prompt and the question
    assert reply["blended_tokens_micros"] == (reply["input_tokens"] + reply["output_tokens"]) * 1_000_000

    row = await chats.get_chat(db, chat["user_id"], chat["id"])
    assert row["message_count"] == 2
    assert row["blended_token_usage_micros"] == reply["blended_tokens_micros"]
    assert row["last_message_at"] == reply["created_at"]
    assert row["title"] == "What is the weekly revenue?"

    # The reply's deltas were compacted away when it completed: its final event has the text.
    replay = await events.read_after(db, chat["pk"], 0)
    kinds = [r["type"] for r in replay]
    assert kinds == [events.MESSAGE_CREATED, events.MESSAGE_CREATED, events.MESSAGE_COMPLETED, events.CHAT_UPDATED]
    assert orjson.loads(replay[2]["data"])["content"] == reply["content"]


_DELTA_ROWS = sa.select(sa.func.count().label("n")).where(
    chat_events.c.chat_pk == sa.bindparam("chat_pk"), chat_events.c.type == events.MESSAGE_DELTA
)


async def delta_rows(db: Database, chat: dict[str, Any]) -> int:
    row = await db.fetch_one(_DELTA_ROWS, {"chat_pk": chat["pk"]})
    assert row is not None
    return int(row["n"])


async def first_delta_while_streaming(db: Database, chat: dict[str, Any], turn: asyncio.Task[Any]) -> int:
    """The id of the reply's first ``message.delta`` event, read while the reply streams."""
    while True:
        assert not turn.done(), "the reply ended before a delta was seen"
        deltas = [r["pk"] for r in await events.read_after(db, chat["pk"], 0) if r["type"] == events.MESSAGE_DELTA]
        if deltas:
            return deltas[0]
        await asyncio.sleep(0.01)


async def test_deltas_are_compacted_when_the_reply_completes_and_replay_stays_whole(db: Database) -> None:
    """While a reply streams, its deltas are stored; once it completes they are deleted,
    and a replay from the start, or from the id of a deleted delta, ends with the whole text."""
    chat = await new_chat(db, " ".join(f"w{i}" for i in range(40)))  # test:slow: 20 ms a word
    turn = asyncio.create_task(drain(make_worker(db, model="test:slow")))
    mid_reply = await first_delta_while_streaming(db, chat, turn)
    assert await turn == 1
    _, reply = await messages_of(db, chat)
    assert reply["status"] == "completed" and len(reply["content"].split()) == 42

    assert await delta_rows(db, chat) == 0
    replay = await events.read_after(db, chat["pk"], 0)
    assert [r["type"] for r in replay] == [
        events.MESSAGE_CREATED, events.MESSAGE_CREATED, events.MESSAGE_COMPLETED, events.CHAT_UPDATED,
    ]  # fmt: skip
    assert orjson.loads(replay[1]["data"])["content"] == "" and orjson.loads(replay[1]["data"])["id"] == reply["id"]
    assert orjson.loads(replay[2]["data"])["content"] == reply["content"]
    resumed = await events.read_after(db, chat["pk"], mid_reply)
    assert [r["type"] for r in resumed] == [events.MESSAGE_COMPLETED, events.CHAT_UPDATED]
    assert orjson.loads(resumed[0]["data"])["content"] == reply["content"]


@pytest.mark.parametrize(("max_attempts", "outcome"), [(3, "completed"), (1, "failed")])
async def test_deltas_of_an_attempt_whose_worker_died_are_compacted(
    db: Database, max_attempts: int, outcome: str
) -> None:
    """A worker dies mid-reply, after writing deltas; the reply starts over on another one
    and completes (or, past its attempts, fails): no delta of either attempt is kept."""
    chat = await new_chat(db, " ".join(f"w{i}" for i in range(40)))
    dying = asyncio.create_task(drain(make_worker(db, "dying", model="test:slow", run_lease_seconds=1)))
    await first_delta_while_streaming(db, chat, dying)
    dying.cancel()  # the worker is gone: its lease is no longer renewed
    with pytest.raises(asyncio.CancelledError):
        await dying
    assert await delta_rows(db, chat) > 0
    later = clock.now_ms() + 2_000
    clock.set_clock(lambda: later)
    assert await drain(make_worker(db, "w2", run_lease_seconds=1, max_run_attempts=max_attempts)) == 1
    _, reply = await messages_of(db, chat)
    assert reply["status"] == outcome
    row = await db.fetch_one(sa.select(runs_table.c.status, runs_table.c.worker_id, runs_table.c.attempts))
    assert row is not None and dict(row) == {"status": outcome, "worker_id": "w2", "attempts": 2}
    assert await delta_rows(db, chat) == 0
    final = (await events.read_after(db, chat["pk"], 0))[-1 if outcome == "failed" else -2]
    assert orjson.loads(final["data"])["status"] == outcome
    assert orjson.loads(final["data"])["content"] == reply["content"]


async def test_weights_make_exact_decimal_usage(db: Database) -> None:
    chat = await new_chat(db, "one two")
    weights = {"test:echo": {"input": "0.25", "output": "1.5"}}
    assert await drain(make_worker(db, token_weights=weights)) == 1
    _, reply = await messages_of(db, chat)
    expected = reply["input_tokens"] * 250_000 + reply["output_tokens"] * 1_500_000
    assert reply["blended_tokens_micros"] == expected
    row = await chats.get_chat(db, chat["user_id"], chat["id"])
    assert chats.chat_json(row)["blended_token_usage"] == chats.decimal_tokens(expected)


async def test_history_is_sent(db: Database) -> None:
    chat = await new_chat(db, "first question here")
    worker = make_worker(db)
    assert await drain(worker) == 1
    await follow_up(db, chat, "and then?")
    assert await drain(worker) == 1
    _, first, _, second = await messages_of(db, chat)
    assert second["content"] == "You said: and then?"
    # The second prompt holds the first exchange: its words are counted again.
    assert second["input_tokens"] == first["input_tokens"] + first["output_tokens"] + 2


async def test_user_titles_are_never_replaced(db: Database) -> None:
    titled = await new_chat(db, "a b c", title="Mine")
    cleared = await new_chat(db, "d e f")
    await chats.update_chat(db, cleared["user_id"], cleared["id"], ChatChanges(title=None))
    assert await drain(make_worker(db)) == 2
    assert (await chats.get_chat(db, titled["user_id"], titled["id"]))["title"] == "Mine"
    assert (await chats.get_chat(db, cleared["user_id"], cleared["id"]))["title"] is None


def test_generated_titles() -> None:
    assert generated_title("  Weekly   revenue\nplease ") == "Weekly revenue"
    long = generated_title("word " * 40)
    assert len(long) <= 61 and long.endswith("…")
    assert generated_title("   ") == "New chat"


_RUN_TIMES = sa.select(
    runs_table.c.chat_pk, runs_table.c.started_at, runs_table.c.finished_at, runs_table.c.status
).order_by(runs_table.c.pk)


async def test_one_run_at_a_time_per_chat_in_order(db: Database) -> None:
    """Three workers, two runs of one chat and one of another, all queued at once: the
    chat's second run starts only after its first finished (by the recorded instants),
    while the other chat's run is answered beside the first."""
    words = " ".join(f"w{i}" for i in range(15))  # test:slow: 20 ms a word, about 0.3 s a reply
    chat = await new_chat(db, words)
    await follow_up(db, chat, words)
    other = await new_chat(db, words)
    workers = [make_worker(db, f"w{n}", model="test:slow") for n in range(3)]
    done = await asyncio.gather(*(drain(worker) for worker in workers))
    assert sum(done) == 3
    first, second, beside = await db.fetch_all(_RUN_TIMES)
    assert (first["chat_pk"], second["chat_pk"], beside["chat_pk"]) == (chat["pk"], chat["pk"], other["pk"])
    assert {first["status"], second["status"], beside["status"]} == {"completed"}
    assert second["started_at"] >= first["finished_at"], "the chat's second run started before its first finished"
    assert beside["started_at"] < first["finished_at"], "the other chat waited: the workers did not run at once"
    _, reply_1, _, reply_2 = await messages_of(db, chat)
    assert reply_1["completed_at"] <= reply_2["created_at"]


class CountingDatabase:
    """A database that records every statement run through it (and its transactions)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.statements: list[Any] = []
        self.transactions = 0

    async def fetch_one(self, statement: Any, params: Any = None) -> Any:
        self.statements.append(statement)
        return await self.db.fetch_one(statement, params or {})

    async def fetch_all(self, statement: Any, params: Any = None) -> Any:
        self.statements.append(statement)
        return await self.db.fetch_all(statement, params or {})

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        self.transactions += 1
        async with self.db.transaction() as tx:
            yield CountingConnection(tx, self.statements)


class CountingConnection:
    def __init__(self, tx: Any, statements: list[Any]) -> None:
        self.tx = tx
        self.statements = statements

    async def fetch_one(self, statement: Any, params: Any = None) -> Any:
        self.statements.append(statement)
        return await self.tx.fetch_one(statement, params or {})

    async def fetch_all(self, statement: Any, params: Any = None) -> Any:
        self.statements.append(statement)
        return await self.tx.fetch_all(statement, params or {})

    async def execute(self, statement: Any, params: Any = None) -> int:
        self.statements.append(statement)
        return int(await self.tx.execute(statement, params or {}))

    async def notify(self, channel: str, payload: str) -> None:
        await self.tx.notify(channel, payload)


async def test_the_claim_is_one_write_statement_that_skips_a_chat_whose_older_run_is_active(db: Database) -> None:
    """Chat A has two runs and its first is running; chat B's run is newer than A's second.
    The claim passes over A's second run (its older run is active) and takes B's, in one
    write statement (after a read that found it); then nothing is claimable until A's
    first run ends."""
    chat_a = await new_chat(db, "first")
    await follow_up(db, chat_a, "second")
    chat_b = await new_chat(db, "other")
    running = await runs.claim(db, "a", 60_000)
    assert running is not None and running.chat_pk == chat_a["pk"]

    counting = CountingDatabase(db)
    claimed = await runs.claim(cast(Database, counting), "b", 60_000)
    assert claimed is not None and claimed.chat_pk == chat_b["pk"] and claimed.attempt == 1
    probe, claim = counting.statements
    assert isinstance(probe, sa.Select) and isinstance(claim, sa.Update) and counting.transactions == 1
    sql = str(claim.compile(dialect=postgresql.dialect()))
    assert "NOT (EXISTS" in sql and "FOR UPDATE SKIP LOCKED" in sql

    assert await runs.claim(db, "c", 60_000) is None  # A's second run waits for its first
    async with db.transaction() as tx:
        assert await runs.finish(tx, running, status="completed")
    after = await runs.claim(db, "c", 60_000)
    assert after is not None and after.chat_pk == chat_a["pk"] and after.pk > running.pk


async def test_an_idle_claim_opens_no_write_transaction(db: Database) -> None:
    """Most claims find nothing (every worker polls every second): each is one read, never
    a write transaction (on SQLite, ``BEGIN IMMEDIATE`` under the one write lock)."""
    counting = CountingDatabase(db)
    assert await runs.claim(cast(Database, counting), "w", 60_000) is None  # nothing queued
    chat = await new_chat(db, "first")
    await follow_up(db, chat, "second")
    assert await runs.claim(db, "a", 60_000) is not None  # its first run, under a lease that holds
    for _ in range(3):  # its second run waits for the first; the first's lease holds
        assert await runs.claim(cast(Database, counting), "w", 60_000) is None
    assert counting.transactions == 0
    assert all(isinstance(statement, sa.Select) for statement in counting.statements), counting.statements


async def test_a_lapsed_lease_is_claimed_again_and_fences_the_old_worker(db: Database) -> None:
    await new_chat(db, "slow one")
    now = clock.now_ms()
    clock.set_clock(lambda: now)
    dead = await runs.claim(db, "dead", 1_000)
    assert dead is not None and dead.attempt == 1
    clock.set_clock(lambda: now + 999)
    assert await runs.claim(db, "early", 1_000) is None  # the lease still holds
    clock.set_clock(lambda: now + 2_000)
    taken = await runs.claim(db, "alive", 1_000)
    assert taken is not None and taken.pk == dead.pk and taken.attempt == 2
    assert await runs.claim(db, "third", 1_000) is None  # the new lease holds
    async with db.transaction() as tx:
        assert not await runs.finish(tx, dead, status="completed")  # fenced off
        assert not await runs.set_message(tx, dead, 1)
    assert not await runs.renew(db, dead, 1_000)
    assert await runs.renew(db, taken, 1_000)
    async with db.transaction() as tx:
        assert await runs.finish(tx, taken, status="completed")
    row = await db.fetch_one(sa.select(runs_table.c.status, runs_table.c.worker_id, runs_table.c.attempts))
    assert row is not None and dict(row) == {"status": "completed", "worker_id": "alive", "attempts": 2}


def frozen_at(instant: int) -> Callable[[], int]:
    return lambda: instant


async def test_after_too_many_attempts_the_reply_fails(db: Database) -> None:
    chat = await new_chat(db, "doomed")
    now = clock.now_ms()
    for attempt in range(3):
        clock.set_clock(frozen_at(now + attempt * 10_000))
        claimed = await runs.claim(db, f"dead{attempt}", 1_000)
        assert claimed is not None and claimed.attempt == attempt + 1
    clock.set_clock(lambda: now + 100_000)
    assert await drain(make_worker(db, max_run_attempts=3, run_lease_seconds=1)) == 1
    user, reply = await messages_of(db, chat)
    assert user["status"] == "completed"
    assert reply["status"] == "failed" and reply["error"] == "the reply was interrupted 3 times"
    row = await db.fetch_one(sa.select(runs_table.c.status, runs_table.c.attempts))
    assert row is not None and (row["status"], row["attempts"]) == ("failed", 4)


async def test_a_lost_lease_cancels_the_turn_and_nothing_more_is_written(db: Database) -> None:
    """While a reply streams, another worker takes its run over (as after a lapsed lease).
    The next renewal finds the run gone: the turn is cancelled at once, long before its
    reply would have ended, and neither the reply nor the run is written again."""
    chat = await new_chat(db, " ".join(f"w{i}" for i in range(100)))  # test:slow: about 2 s
    worker = make_worker(db, "loser", model="test:slow", run_lease_seconds=0.3)  # renews every 0.1 s
    turn = asyncio.create_task(worker.run_one())
    await first_delta_while_streaming(db, chat, turn)
    async with db.transaction() as tx:  # what another worker's claim of a lapsed lease does
        await tx.execute(sa.update(runs_table).values(attempts=runs_table.c.attempts + 1, worker_id="thief"))
    taken_at = time.monotonic()
    assert await asyncio.wait_for(turn, 5) is True
    assert time.monotonic() - taken_at < 1.0, "the turn went on after its lease was lost"
    _, reply = await messages_of(db, chat)
    written = await events.read_after(db, chat["pk"], 0)
    await asyncio.sleep(0.5)  # a turn still running would write a delta every 50 ms
    assert (await messages_of(db, chat))[1] == reply
    assert await events.read_after(db, chat["pk"], 0) == written
    assert reply["status"] == "streaming" and len(reply["content"].split()) < 100
    assert events.MESSAGE_COMPLETED not in [e["type"] for e in written]
    row = await db.fetch_one(sa.select(runs_table.c.status, runs_table.c.worker_id, runs_table.c.attempts))
    assert row is not None and dict(row) == {"status": "running", "worker_id": "thief", "attempts": 2}


async def test_a_failing_model_fails_the_reply_and_keeps_the_message(db: Database) -> None:
    chat = await new_chat(db, "please fail")
    assert await drain(make_worker(db, model="test:fail")) == 1
    user, reply = await messages_of(db, chat)
    assert user["content"] == "please fail" and user["status"] == "completed"
    assert reply["status"] == "failed" and "fail" in reply["error"]
    status = await db.fetch_one(
        sa.select(runs_table.c.status, runs_table.c.error).where(runs_table.c.chat_pk == sa.bindparam("c")),
        {"c": chat["pk"]},
    )
    assert status is not None and status["status"] == "failed"
    assert [r["type"] for r in await events.read_after(db, chat["pk"], 0)][-1] == events.MESSAGE_FAILED
    assert (await chats.get_chat(db, chat["user_id"], chat["id"]))["message_count"] == 2


async def test_transient_failures_are_retried(db: Database) -> None:
    chat = await new_chat(db, "try again")
    assert await drain(make_worker(db, model="test:flaky-2")) == 1
    _, reply = await messages_of(db, chat)
    assert reply["status"] == "completed" and reply["content"] == "You said: try again"


async def test_runs_of_deleted_chats_are_cancelled(db: Database) -> None:
    chat = await new_chat(db, "never mind")
    await chats.delete_chat(db, chat["user_id"], chat["id"])
    assert await drain(make_worker(db)) == 1
    row = await db.fetch_one(
        sa.select(runs_table.c.status).where(runs_table.c.chat_pk == sa.bindparam("c")), {"c": chat["pk"]}
    )
    assert row is not None and row["status"] == "cancelled"


async def test_a_failed_reply_is_retried_in_place_and_counted_once(db: Database) -> None:
    chat = await new_chat(db, "second time lucky")
    assert await drain(make_worker(db, model="test:fail")) == 1
    _, failed = await messages_of(db, chat)
    assert failed["status"] == "failed"
    assert (await chats.get_chat(db, chat["user_id"], chat["id"]))["message_count"] == 2

    where = {"chat_pk": chat["pk"], "chat_id": chat["id"]}
    async with db.transaction() as tx:
        retried = await retry_reply(tx, **where, message_id=failed["id"], now=clock.now_ms())
    assert (retried["pk"], retried["status"], retried["content"]) == (failed["pk"], "pending", "")
    assert retried["error"] is None
    assert retried["completed_at"] is None and retried["model"] is None
    assert (await chats.get_chat(db, chat["user_id"], chat["id"]))["message_count"] == 1  # pending: counts on start
    assert [r["type"] for r in await events.read_after(db, chat["pk"], 0)][-1] == events.MESSAGE_RETRIED
    with pytest.raises(Conflict, match="pending"):
        async with db.transaction() as tx:
            await retry_reply(tx, **where, message_id=failed["id"], now=clock.now_ms())

    assert await drain(make_worker(db)) == 1
    user, reply = await messages_of(db, chat)
    assert (reply["id"], reply["status"]) == (failed["id"], "completed")
    assert reply["content"] == "You said: second time lucky"
    assert reply["error"] is None and reply["output_tokens"] == 5
    row = await chats.get_chat(db, chat["user_id"], chat["id"])
    assert row["message_count"] == 2 and row["blended_token_usage_micros"] > 0
    history = await db.fetch_all(
        sa.select(
            runs_table.c.trigger, runs_table.c.status, runs_table.c.user_message_pk, runs_table.c.assistant_message_pk
        )
        .where(runs_table.c.chat_pk == sa.bindparam("c"))
        .order_by(runs_table.c.pk),
        {"c": chat["pk"]},
    )
    assert [tuple(r) for r in history] == [
        ("message", "failed", user["pk"], reply["pk"]),
        ("retry", "completed", user["pk"], reply["pk"]),
    ]
    await follow_up(db, chat, "and next?")  # a completed reply can be written again only while it is the last
    with pytest.raises(Conflict, match="last reply"):
        async with db.transaction() as tx:
            await retry_reply(tx, **where, message_id=reply["id"], now=clock.now_ms())
    with pytest.raises(Conflict, match="user's message"):
        async with db.transaction() as tx:
            await retry_reply(tx, **where, message_id=user["id"], now=clock.now_ms())
    with pytest.raises(NotFound):
        async with db.transaction() as tx:
            await retry_reply(tx, **where, message_id="aimsg_nope", now=clock.now_ms())


async def test_concurrent_first_gets_of_a_model_share_one_load() -> None:
    """Workers that start cold at once get one model, not one each (a local model would
    otherwise start one engine per worker)."""
    models = Models(Settings(model="test:echo"))
    loaded = await asyncio.gather(*(models.get("test:echo") for _ in range(8)))
    assert all(model is loaded[0] for model in loaded)
    assert await models.get("test:echo") is loaded[0]
    await models.close()


async def test_a_failed_model_load_is_tried_again() -> None:
    models = Models(Settings(model="test:echo"))
    failures = await asyncio.gather(*(models.get("nope:model") for _ in range(4)), return_exceptions=True)
    assert all(isinstance(f, ValueError) for f in failures)
    assert all(f is failures[0] for f in failures)  # the concurrent gets shared one attempt
    with pytest.raises(ValueError, match="unknown model provider") as again:
        await models.get("nope:model")
    assert again.value is not failures[0]  # a new attempt: the failure was not kept


def test_a_worker_name_fits_its_column_whatever_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the name is ``runs.worker_id`` (64 characters); a long host name (a pod's)
    made it longer, and every claim failed on PostgreSQL."""
    monkeypatch.setattr(socket, "gethostname", lambda: "p" * 63)
    name = worker_name()
    assert len(name) <= 64 and name.startswith("p" * 40 + f":{os.getpid()}:")
