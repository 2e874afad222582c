"""Workers: claim runs, hold their leases, run many turns at once, each in a child task.

A process that runs agent turns (``aichats serve``, unless ``AICHATS_WORKERS=0``, and
``aichats worker``) has one :class:`Worker`, under the process's supervisor
(:mod:`aichats.runs.supervisor`). A turn spends nearly all its time waiting for its model
(a remote one answers in seconds), so a worker does not hold one turn at a time: it keeps
up to ``AICHATS_WORKERS`` turns in flight, each an asyncio task, and claims runs in
batches (:func:`runs.claim_many`: one statement takes as many as there is room for).

Room is counted per :class:`Lane`: the turns of one remote provider (``openai``,
``anthropic``, ``test``), at most ``AICHATS_PROVIDER_TURNS_IN_FLIGHT`` for it (default: as
many as the process runs), or of one local engine, at most its parallel slots
(``AICHATS_LOCAL_PARALLEL``: more would only queue inside the engine). When the agents'
models fall in different lanes, each lane claims only its agents' turns.

Every third of ``AICHATS_RUN_LEASE_SECONDS`` one statement renews the leases of every run
the worker holds (:func:`runs.renew_all`). A run missing from the renewal was taken by
another worker (this one's lease lapsed: it stalled) and its turn alone is cancelled;
nothing more is written for that run (every write is fenced by its attempt). A worker that
dies stops renewing, and after the lease another worker claims its runs again (up to
``AICHATS_MAX_RUN_ATTEMPTS`` tries). When the user stops a reply, its run is cancelled in
the database and a notification (``aichats_cancel``) reaches every process: the one
running that turn cancels it at once (:class:`Running`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from aichats.agent.models import ModelError, parse_spec
from aichats.config import Settings
from aichats.observability import logs, metrics
from aichats.runs.supervisor import Service
from aichats.runs.turn import Models, run_turn
from aichats.scheduling.loop import Passes
from aichats.services import runs
from aichats.services.chats import AgentIdentifier
from aichats.services.replies import LostRun
from aichats.services.runs import Claim
from aichats.storage.database import Database
from aichats.tools.operator import OperatorServers

log = logging.getLogger("aichats.runs")

POLL_SECONDS = 1.0  # without a notification, look for work (and lapsed leases) this often
# After a renewal finds a run no longer running: how long a turn that just finished it
# (its commit raced the renewal) has to end by itself before it is taken for lost.
FINISHING_SECONDS = 0.1


class Running:
    """The turns this process runs, by run pk, so that a stopped run's turn is cancelled at once.

    A notification names the run; ``None`` (notifications may have been missed, or another
    SQLite process committed something) makes the worker look up every run it holds, in one
    read, and a run found cancelled has its turn cancelled too.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.turns: dict[int, asyncio.Task[None]] = {}
        self.stopped: set[int] = set()
        self._checks: set[asyncio.Task[None]] = set()

    def heard(self, payload: str | None) -> None:
        if payload is None:
            if self.turns:
                check = asyncio.get_running_loop().create_task(self._check(list(self.turns)))
                self._checks.add(check)
                check.add_done_callback(self._checks.discard)
        elif payload.isdigit():
            self.stop(int(payload))

    def stop(self, run_pk: int) -> None:
        turn = self.turns.get(run_pk)
        if turn is not None and not turn.done():
            self.stopped.add(run_pk)
            turn.cancel()

    async def _check(self, run_pks: list[int]) -> None:
        with contextlib.suppress(Exception):  # the next notification, or the lease, catches up
            for run_pk in await runs.cancelled_among(self.db, run_pks):
                self.stop(run_pk)


@dataclass(eq=False)
class Lane:
    """Turns of one remote provider, or of one local engine, in flight in this process."""

    name: str
    limit: int
    agents: tuple[str, ...]
    busy: int = 0


def lanes_of(settings: Settings, capacity: int) -> list[Lane]:
    """The lanes of this process's agents, each with its limit (never above ``capacity``,
    the process's own): a local model's is its engine's parallel slots, a remote
    provider's ``AICHATS_PROVIDER_TURNS_IN_FLIGHT`` (default: ``capacity``)."""
    lanes: dict[str, Lane] = {}
    limits = {str(provider): limit for provider, limit in settings.provider_turns_in_flight.items()}
    for agent in AgentIdentifier:
        spec = settings.model_for(agent.value)
        try:
            provider = parse_spec(spec)[0]
        except ValueError:  # each of its replies fails at once, saying why
            name, limit = spec, capacity
        else:
            if provider == "local":  # one engine per model file, each with its own slots
                name, limit = spec, settings.local_parallel
            else:
                name, limit = provider, limits.get(provider, capacity)
        lane = lanes.setdefault(name, Lane(name, min(limit, capacity), ()))
        lane.agents += (agent.value,)
    return list(lanes.values())


@dataclass(eq=False)
class _Held:
    """A run this worker holds, and its turn."""

    run: Claim
    lane: Lane
    turn: asyncio.Task[None]
    lost: bool = False  # its lease was lost, and its turn cancelled for it


class Worker:
    """Claims runs while it has room, and runs their turns, up to ``capacity`` at once.

    ``turns_db`` is what the turns read and write through (default ``db``); claims and
    lease renewals always use ``db``. ``passes``: the process's scheduling passes; while one
    fires, it claims nothing, for at most ``loop.HOLD_SECONDS``
    (:class:`~aichats.scheduling.loop.Passes`).
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        models: Models,
        wake: asyncio.Event,
        name: str,
        *,
        operator: OperatorServers | None = None,
        running: Running | None = None,
        capacity: int | None = None,
        turns_db: Database | None = None,
        passes: Passes | None = None,
    ) -> None:
        self.db = db
        self.turns_db = turns_db or db
        self.passes = passes or Passes()  # none given: no pass ever holds this worker
        self.settings = settings
        self.models = models
        self.operator = operator or OperatorServers(settings)
        self.running = running or Running(db)
        self.wake = wake
        self.worker_id = name
        self.lease_ms = int(settings.run_lease_seconds * 1000)
        self.capacity = max(1, settings.workers if capacity is None else capacity)
        self.lanes = lanes_of(settings, self.capacity)
        self.held: dict[tuple[int, int], _Held] = {}  # by (run pk, attempt)
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ the process's loop

    async def run_forever(self) -> None:
        """Claim runs whenever there is room and something to claim, until cancelled; then
        cancel every turn in flight and wait for each to end (their runs' leases lapse, and
        another worker takes them over)."""
        self._stopping = False
        try:
            async with self._leases_kept():
                while True:
                    await self.passes.over()  # this process's scheduling pass first
                    self.wake.clear()  # before looking: a notification during the claim is kept
                    try:
                        await self.claim_turns()
                    except Exception:
                        log.exception("worker %s failed to claim runs", self.worker_id)
                    # A new run, a turn that ended (its room, or its chat's next run), or the poll.
                    # ``asyncio.timeout``, not ``wait_for``: Python 3.11's ``wait_for`` swallows
                    # a cancellation that arrives as the event is set (a turn ending as the
                    # supervisor stops the worker), and the worker would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_SECONDS):
                            await self.wake.wait()
        finally:
            await self._stop_turns()

    async def claim_turns(self) -> int:
        """Claim, for each lane with room, as many runs as it has room for (one statement
        each), and start their turns; how many were started."""
        started = 0
        every_agent = len(self.lanes) == 1
        for lane in self.lanes:
            for agent in (None,) if every_agent else lane.agents:
                room = min(lane.limit - lane.busy, self.capacity - len(self.held))
                if room <= 0:
                    break
                claimed = await runs.claim_many(self.db, self.worker_id, self.lease_ms, room, agent_identifier=agent)
                for run in claimed:
                    self._start(run, lane, report=True)
                started += len(claimed)
        return started

    async def run_one(self) -> bool:
        """Claim one run and run its turn to its end, holding its lease meanwhile; False
        when there was none to claim (the process runs :meth:`run_forever`; this is the
        same, one turn at a time, for tests and tools).

        Cancelling it cancels the turn too, and waits for it to end. A turn that ended
        cancelled while the worker was not (a library raised ``CancelledError``, a model
        load it awaited was cancelled) is logged and the worker goes on: the run is left
        as it is, its lease lapses, and a later claim tries it again (counted against
        ``AICHATS_MAX_RUN_ATTEMPTS``, past which the reply fails).
        """
        claimed = await runs.claim_many(self.db, self.worker_id, self.lease_ms, 1)
        if not claimed:
            return False
        held = self._start(claimed[0], self.lanes[0], report=False)
        try:
            async with self._leases_kept():
                await asyncio.wait([held.turn])
        finally:
            if not held.turn.done():  # this worker is being stopped: its turn stops with it
                held.turn.cancel()
                await asyncio.wait([held.turn])
        error = self._outcome(held)
        if error is not None:
            raise error  # what escaped the turn (it fails its reply on any error) is the caller's to log
        return True

    # ------------------------------------------------------------------ turns

    def _start(self, run: Claim, lane: Lane, *, report: bool) -> _Held:
        metrics.run_claimed(run.queued_at, run.attempt)  # aichats_run_claim_latency_seconds
        turn = asyncio.create_task(
            run_turn(self.turns_db, self.settings, self.models, self.operator, run),
            name=f"aichats-turn-{run.id}",
            context=logs.run_context(run.id),  # every line the turn logs names its run
        )
        held = _Held(run, lane, turn)
        self.held[(run.pk, run.attempt)] = held
        lane.busy += 1
        self.running.turns[run.pk] = turn
        turn.add_done_callback(partial(self._ended, held, report))
        return held

    def _ended(self, held: _Held, report: bool, _turn: asyncio.Task[None]) -> None:
        """A turn ended: its room is free, and its chat's next run may be claimable now."""
        del self.held[(held.run.pk, held.run.attempt)]
        held.lane.busy -= 1
        if self.running.turns.get(held.run.pk) is held.turn:
            del self.running.turns[held.run.pk]
        self.wake.set()
        if report:
            error = self._outcome(held)
            if error is not None:
                log.error("the turn of run %s raised", held.run.id, exc_info=error)

    def _outcome(self, held: _Held) -> BaseException | None:
        """Log how a turn ended, when it did not end as turns do; what escaped it otherwise.

        Its exception is retrieved in every case, so asyncio never reports it as "never
        retrieved"."""
        run, turn = held.run, held.turn
        error = None if turn.cancelled() else turn.exception()
        if run.pk in self.running.stopped:
            self.running.stopped.discard(run.pk)
            log.info("run %s was stopped by its user", run.id)
        elif held.lost or isinstance(error, LostRun):
            # Whatever else a lost turn raised on its way out (while being cancelled) goes with it.
            shown = None if isinstance(error, LostRun) else error
            log.warning("run %s was taken over by another worker", run.id, exc_info=shown)
        elif turn.cancelled():
            if not self._stopping:
                log.error(
                    "the turn of run %s was cancelled, not by its worker; it is tried again when its lease lapses",
                    run.id,
                )
        elif error is not None:
            return error
        return None

    async def _stop_turns(self) -> None:
        self._stopping = True
        turns = [held.turn for held in self.held.values()]
        for turn in turns:
            turn.cancel()
        if turns:
            await asyncio.wait(turns)

    # ------------------------------------------------------------------ leases

    @contextlib.asynccontextmanager
    async def _leases_kept(self) -> AsyncIterator[None]:
        """The leases of every held run are renewed while in the block (by one task per
        worker: a block within another's leaves it to the outer one)."""
        if self._keeper is not None:
            yield
            return
        self._keeper = asyncio.create_task(self._keep_leases(), name=f"aichats-leases-{self.worker_id}")
        try:
            yield
        finally:
            keeper, self._keeper = self._keeper, None
            keeper.cancel()
            await asyncio.wait([keeper])

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.renew_leases()
            except Exception:  # the database blinked: try again at the next third of the lease
                log.exception("renewing the leases of worker %s failed", self.worker_id)

    async def renew_leases(self) -> None:
        """Renew every held run's lease in one statement; cancel the turns of those lost.

        A renewal also misses a run when the turn's own last write (``runs.finish``)
        committed just before it: the turn is then ending, not lost. So a turn that ends
        within ``FINISHING_SECONDS`` of the renewal is left to end by itself (a lost turn
        cannot write in that time either: every write it makes is fenced).
        """
        held = [h for h in self.held.values() if not h.turn.done()]
        if not held:
            return
        renewed = await runs.renew_all(self.db, [h.run for h in held], self.lease_ms)
        missing = [h for h in held if (h.run.pk, h.run.attempt) not in renewed and not h.turn.done()]
        if not missing:
            return
        await asyncio.wait([h.turn for h in missing], timeout=FINISHING_SECONDS)
        for h in missing:
            if not h.turn.done():
                h.lost = True
                h.turn.cancel()


def worker_name() -> str:
    """``host:pid:random``, at most 64 characters (``runs.worker_id``): the host name cut to
    40 (a long pod name would otherwise make every claim fail), 6 random hex digits."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class Workers:
    """This process's worker, its model cache and its wake-up (``aichats_runs``), for
    ``count`` turns at once (``AICHATS_WORKERS``; 0: none); ``passes``: the process's
    scheduling passes, which the worker lets go first."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        count: int,
        *,
        turns_db: Database | None = None,
        operator: OperatorServers | None = None,
    ) -> None:
        self.db = db
        self.turns_db = turns_db
        self.settings = settings
        self.count = count
        self.models = Models(settings)
        self.operator = operator or OperatorServers(settings)
        self.running = Running(db)
        self.passes = Passes()
        self._wake = asyncio.Event()

    async def prepare(self) -> None:
        """Load the agents' models (a local model's engine starts now, not on the first
        reply) and listen for queued runs."""
        if self.count:
            for agent in AgentIdentifier:
                try:
                    await self.models.get(self.settings.model_for(agent.value))
                except (ModelError, ValueError) as error:  # each reply will say so too
                    log.error("the %s agent's model cannot be used: %s", agent.value, error)
        await self.db.listen(runs.CHANNEL, lambda _payload: self._wake.set())
        await self.db.listen(runs.CANCEL_CHANNEL, self.running.heard)

    def services(self) -> list[Service]:
        """The worker, for the supervisor (none for 0 turns); its id names host and process."""
        if not self.count:
            return []
        worker = Worker(
            self.db,
            self.settings,
            self.models,
            self._wake,
            worker_name(),
            operator=self.operator,
            running=self.running,
            capacity=self.count,
            turns_db=self.turns_db,
            passes=self.passes,
        )
        return [Service("worker", worker.run_forever)]

    async def close(self) -> None:
        await self.models.close()
