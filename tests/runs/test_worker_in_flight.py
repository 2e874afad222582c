"""Many turns in flight in one worker: batched claims, lanes and their limits, one renewal
for every lease, a lost lease or a user's Stop cancelling one turn only, and stopping.

Both databases. Where a test needs turns that stay in flight, ``run_turn`` is replaced by
one that waits until the test lets it end (:class:`HeldTurns`): the worker's side (claims,
rooms, leases, cancellation) is what is tested, not the reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.config import Settings
from aichats.runs import worker as worker_module
from aichats.runs.turn import Models
from aichats.runs.worker import Worker, lanes_of
from aichats.services import runs
from aichats.services.chats import AgentIdentifier
from aichats.services.runs import Claim
from aichats.storage.database import Database
from aichats.storage.schema import runs as runs_table
from tests.runs.test_worker import CountingDatabase, follow_up, messages_of, new_chat

pytestmark = pytest.mark.anyio

_RUNS = sa.select(
    runs_table.c.pk, runs_table.c.chat_pk, runs_table.c.status, runs_table.c.worker_id, runs_table.c.attempts,
    runs_table.c.started_at, runs_table.c.finished_at, runs_table.c.lease_expires_at,
).order_by(runs_table.c.pk)  # fmt: skip


def worker_of(db: Database, name: str = "w1", capacity: int | None = None, **overrides: Any) -> Worker:
    settings = Settings(**{"model": "test:echo", "model_timeout_seconds": 5, **overrides})
    return Worker(db, settings, Models(settings), asyncio.Event(), name, capacity=capacity)


async def all_runs(db: Database) -> list[dict[str, Any]]:
    return [dict(row) for row in await db.fetch_all(_RUNS)]


class HeldTurns:
    """Stands in for ``run_turn``: each turn waits until :meth:`end` lets it go (then
    finishes its run as completed), so tests choose what is in flight."""

    def __init__(self) -> None:
        self.started: dict[int, Claim] = {}
        self.cancelled: set[int] = set()
        self._release: dict[int, asyncio.Event] = {}

    async def __call__(self, db: Database, settings: Settings, models: Models, operator: object, run: Claim) -> None:
        self.started[run.pk] = run
        release = self._release.setdefault(run.pk, asyncio.Event())
        try:
            await release.wait()
        except asyncio.CancelledError:
            self.cancelled.add(run.pk)
            raise
        async with db.transaction() as tx:
            await runs.finish(tx, run, status="completed")

    def end(self, run_pk: int) -> None:
        self._release.setdefault(run_pk, asyncio.Event()).set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldTurns:
    turns = HeldTurns()
    monkeypatch.setattr(worker_module, "run_turn", turns)
    return turns


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """The worker's loop (what the supervisor runs) for the block; stopped after it."""
    forever = asyncio.create_task(worker.run_forever())
    try:
        yield forever
    finally:
        forever.cancel()
        await asyncio.wait([forever])


async def until(condition: Any, what: str, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------ claims


async def test_a_claim_takes_several_runs_in_one_statement_oldest_first_one_per_chat(db: Database) -> None:
    """Six chats, the first with a second message: a claim of up to four takes the four
    oldest runnable runs in one write (after its read), never the first chat's second run
    (its first is active); the next claim takes the rest but that one; none is taken twice."""
    chats = [await new_chat(db, f"chat {n}") for n in range(6)]
    await follow_up(db, chats[0], "chat 0 again")
    queued = await all_runs(db)
    second_of_first = next(r["pk"] for r in queued if r["chat_pk"] == chats[0]["pk"] and r["pk"] != queued[0]["pk"])

    counting = CountingDatabase(db)
    first = await runs.claim_many(cast(Database, counting), "w", 60_000, 4)
    assert [run.chat_pk for run in first] == [chat["pk"] for chat in chats[:4]]
    assert [run.attempt for run in first] == [1, 1, 1, 1]
    probe, claim = counting.statements
    assert isinstance(probe, sa.Select) and isinstance(claim, sa.Update) and counting.transactions == 1

    rest = await runs.claim_many(db, "w", 60_000, 4)
    assert [run.chat_pk for run in rest] == [chat["pk"] for chat in chats[4:]]
    assert await runs.claim_many(db, "w", 60_000, 4) == []  # the second run waits for the first
    assert second_of_first not in {run.pk for run in first + rest}
    async with db.transaction() as tx:
        assert await runs.finish(tx, first[0], status="completed")
    [after] = await runs.claim_many(db, "w", 60_000, 4)
    assert after.pk == second_of_first


async def test_a_claim_for_one_agent_takes_only_its_chats(db: Database) -> None:
    support = [await new_chat(db, f"support {n}") for n in range(2)]
    general = [await new_chat(db, f"general {n}", agent_identifier=AgentIdentifier.general) for n in range(2)]
    taken = await runs.claim_many(db, "w", 60_000, 10, agent_identifier=AgentIdentifier.general)
    assert [run.chat_pk for run in taken] == [chat["pk"] for chat in general]
    taken = await runs.claim_many(db, "w", 60_000, 10, agent_identifier="support")
    assert [run.chat_pk for run in taken] == [chat["pk"] for chat in support]


# ------------------------------------------------------------------ lanes


def test_lanes_follow_the_agents_models_and_their_limits() -> None:
    one = lanes_of(Settings(model="openai:m"), 256)
    assert [(lane.name, lane.limit, lane.agents) for lane in one] == [("openai", 256, ("support", "general"))]
    capped = lanes_of(Settings(model="anthropic:m", provider_turns_in_flight={"anthropic": 20}), 256)
    assert [(lane.name, lane.limit) for lane in capped] == [("anthropic", 20)]
    above = lanes_of(Settings(model="test:echo", provider_turns_in_flight={"test": 500}), 8)
    assert [lane.limit for lane in above] == [8]  # never above the process's own
    mixed = lanes_of(Settings(model="openai:m", model_support="local:smollm2-135m", local_parallel=3), 256)
    assert [(lane.name, lane.limit, lane.agents) for lane in mixed] == [
        ("local:smollm2-135m", 3, ("support",)),  # the engine's slots
        ("openai", 256, ("general",)),
    ]


async def test_many_turns_of_one_worker_are_in_flight_together(db: Database) -> None:
    """Twelve chats answered by one worker with the real turn (``test:slow``, about 0.2 s a
    reply): every run started before any finished (they were in flight together), each
    completed once, by this worker, with its reply."""
    chats = [await new_chat(db, " ".join(f"c{n}w{i}" for i in range(8))) for n in range(12)]
    worker = worker_of(db, capacity=50, model="test:slow")
    async with running(worker):

        async def all_completed() -> bool:
            return all(run["status"] == "completed" for run in await all_runs(db))

        await until(all_completed, "every run to complete", 30)
    done = await all_runs(db)
    assert max(run["started_at"] for run in done) < min(run["finished_at"] for run in done), done
    assert {(run["worker_id"], run["attempts"]) for run in done} == {("w1", 1)}
    for chat in chats:
        _, reply = await messages_of(db, chat)
        assert reply["status"] == "completed" and len(reply["content"].split()) == 10


async def test_a_lane_never_has_more_turns_in_flight_than_its_limit(db: Database, held: HeldTurns) -> None:
    """``test`` limited to 3: of eight queued runs three are claimed; each turn that ends
    makes room for one more, until all are done, never more than three at once."""
    for n in range(8):
        await new_chat(db, f"chat {n}")
    worker = worker_of(db, capacity=10, provider_turns_in_flight={"test": 3})
    async with running(worker):
        for done in range(8):

            async def claimed_up_to_limit(done: int = done) -> bool:
                return len(held.started) == min(8, done + 3)

            await until(claimed_up_to_limit, f"{min(8, done + 3)} turns claimed")
            await asyncio.sleep(0.05)  # room for a wrong claim beyond the limit, were there one
            assert len(held.started) == min(8, done + 3)
            assert len(worker.held) == min(3, 8 - done) and worker.lanes[0].busy == len(worker.held)
            held.end(sorted(held.started)[done])

        async def all_completed() -> bool:
            return all(run["status"] == "completed" for run in await all_runs(db))

        await until(all_completed, "every run to complete")
    assert worker.held == {} and worker.lanes[0].busy == 0


async def test_each_lane_claims_its_agents_turns_as_it_has_room(db: Database, held: HeldTurns) -> None:
    """The support agent on a local engine of 2 slots, the general agent on a remote
    provider: of 4 support and 3 general turns queued, 2 support and every general turn are
    in flight (the engine's full lane holds back no other chat); a support turn that ends
    lets the next one in. (The turns are held: no engine is started.)"""
    support = [await new_chat(db, f"support {n}") for n in range(4)]
    general = [await new_chat(db, f"general {n}", agent_identifier=AgentIdentifier.general) for n in range(3)]
    worker = worker_of(db, capacity=50, model_support="local:smollm2-135m", local_parallel=2)
    assert await worker.claim_turns() == 5
    await asyncio.sleep(0)  # the turns start
    in_flight = {run.chat_pk for run in held.started.values()}
    assert in_flight == {chat["pk"] for chat in support[:2] + general}
    assert await worker.claim_turns() == 0  # the engine's lane is full

    held.end(min(run.pk for run in held.started.values() if run.chat_pk == support[0]["pk"]))

    async def one_ended() -> bool:
        return len(worker.held) == 4

    await until(one_ended, "the support turn to end")
    assert await worker.claim_turns() == 1
    await asyncio.sleep(0)
    assert {run.chat_pk for run in held.started.values()} == in_flight | {support[2]["pk"]}
    await worker._stop_turns()


# ------------------------------------------------------------------ leases, Stop, stopping


async def test_one_statement_renews_every_lease_and_a_lost_one_cancels_that_turn_only(
    db: Database, held: HeldTurns, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(4):
        await new_chat(db, f"chat {n}")
    worker = worker_of(db, capacity=10, run_lease_seconds=60)
    assert await worker.claim_turns() == 4
    await asyncio.sleep(0)
    before = {run["pk"]: run["lease_expires_at"] for run in await all_runs(db)}
    stolen = sorted(before)[1]
    async with db.transaction() as tx:  # what another worker's claim after a lapsed lease does
        await tx.execute(
            sa.update(runs_table)
            .where(runs_table.c.pk == sa.bindparam("pk"))
            .values(attempts=runs_table.c.attempts + 1, worker_id="thief"),
            {"pk": stolen},
        )
    later = clock.now_ms() + 5_000
    clock.set_clock(lambda: later)

    counting = CountingDatabase(db)
    worker.db = cast(Database, counting)
    with caplog.at_level(logging.WARNING, logger="aichats.runs"):
        await worker.renew_leases()

        async def lost_one_ended() -> bool:
            return len(worker.held) == 3

        await until(lost_one_ended, "the lost turn to end")
    assert len(counting.statements) == 1 and counting.transactions == 1
    after = {run["pk"]: run["lease_expires_at"] for run in await all_runs(db)}
    assert all(after[pk] == later + 60_000 for pk in before if pk != stolen), after
    assert after[stolen] == before[stolen]  # not the thief's to lose
    assert held.cancelled == {stolen}
    assert sorted(pk for pk, _ in worker.held) == [pk for pk in sorted(before) if pk != stolen]
    assert [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()] == [
        f"run {held.started[stolen].id} was taken over by another worker"
    ]
    await worker._stop_turns()


async def test_a_users_stop_cancels_that_turn_only(db: Database, held: HeldTurns) -> None:
    """By its notification, or (notifications missed) by one read of every held run."""
    for n in range(3):
        await new_chat(db, f"chat {n}")
    worker = worker_of(db, capacity=10)
    assert await worker.claim_turns() == 3
    await asyncio.sleep(0)
    first, second, third = sorted(held.started)
    worker.running.heard(str(first))
    await asyncio.sleep(0)
    assert held.cancelled == {first}

    async with db.transaction() as tx:  # stopped while this process heard nothing
        await tx.execute(
            sa.update(runs_table).where(runs_table.c.pk == sa.bindparam("pk")).values(status="cancelled"),
            {"pk": third},
        )
    worker.running.heard(None)

    async def third_cancelled() -> bool:
        return third in held.cancelled

    await until(third_cancelled, "the stopped run's turn to be cancelled")
    assert held.cancelled == {first, third}
    assert [pk for pk, _ in worker.held] == [second]
    await worker._stop_turns()


async def test_stopping_the_worker_cancels_every_turn_in_flight(db: Database, held: HeldTurns) -> None:
    for n in range(5):
        await new_chat(db, f"chat {n}")
    worker = worker_of(db, capacity=10)
    async with running(worker) as forever:

        async def all_started() -> bool:
            return len(held.started) == 5

        await until(all_started, "five turns in flight")
    assert forever.cancelled()
    assert held.cancelled == set(held.started) and worker.held == {}
    assert {run["status"] for run in await all_runs(db)} == {"running"}  # left to lapse, for another worker


async def test_a_worker_stopped_just_as_a_turn_ends_stops(db: Database) -> None:
    """Regression: a turn that ends wakes the worker; a stop arriving at that very moment
    was swallowed (Python 3.11's ``wait_for`` returns the event's result instead of
    raising the cancellation) and the worker never stopped, nor did its process."""
    worker = worker_of(db)
    forever = asyncio.create_task(worker.run_forever())
    await asyncio.sleep(0.05)  # it waits for work
    worker.wake.set()  # what a turn's end does
    forever.cancel()
    done, _ = await asyncio.wait([forever], timeout=5)
    assert done and forever.cancelled(), "the worker went on after it was stopped"
