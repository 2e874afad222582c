"""Workers: claim runs, hold their leases, run each turn in a child task.

A worker is a coroutine; ``aichats serve`` runs ``AICHATS_WORKERS`` of them beside the
API (the embedded default) and ``aichats worker`` runs them alone, as many processes as
wanted against one PostgreSQL, each under the process's supervisor
(:mod:`aichats.runs.supervisor`). A worker claims a run (:func:`runs.claim`), runs its
turn (:func:`aichats.runs.turn.run_turn`) in a child task, and meanwhile renews the
run's lease every third of ``AICHATS_RUN_LEASE_SECONDS``. When a renewal finds the run
taken by another worker (this one's lease lapsed: it was too slow, or it stalled), the
child is cancelled and nothing more is written for that run. A worker that dies stops
renewing, and after the lease another worker claims the run again (up to
``AICHATS_MAX_RUN_ATTEMPTS`` tries). When the user stops a reply, its run is cancelled in
the database and a notification (``aichats_cancel``) reaches every process: the one
running that turn cancels it at once (:class:`Running`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from aichats import ids
from aichats.agent.models import ModelError
from aichats.config import Settings
from aichats.runs.supervisor import Service
from aichats.runs.turn import Models, run_turn
from aichats.services import runs
from aichats.services.chats import AgentIdentifier
from aichats.services.replies import LostRun
from aichats.services.runs import Claim
from aichats.storage.database import Database
from aichats.tools.operator import OperatorServers

log = logging.getLogger("aichats.runs")

POLL_SECONDS = 1.0  # without a notification, look for work (and lapsed leases) this often
# After a renewal finds the run no longer running: how long a turn that just finished it
# (its commit raced the renewal) has to end by itself before it is taken for lost.
FINISHING_SECONDS = 0.1


class Running:
    """The turns this process runs, by run pk, so that a stopped run's turn is cancelled at once.

    A notification names the run; ``None`` (notifications may have been missed, or another
    SQLite process committed something) makes each turn look its run up, and a run found
    no longer running is cancelled too.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.turns: dict[int, asyncio.Task[None]] = {}
        self.stopped: set[int] = set()
        self._checks: set[asyncio.Task[None]] = set()

    def heard(self, payload: str | None) -> None:
        if payload is None:
            for run_pk in list(self.turns):
                check = asyncio.get_running_loop().create_task(self._check(run_pk))
                self._checks.add(check)
                check.add_done_callback(self._checks.discard)
        elif payload.isdigit():
            self.stop(int(payload))

    def stop(self, run_pk: int) -> None:
        turn = self.turns.get(run_pk)
        if turn is not None and not turn.done():
            self.stopped.add(run_pk)
            turn.cancel()

    async def _check(self, run_pk: int) -> None:
        with contextlib.suppress(Exception):  # the next notification, or the lease, catches up
            if await runs.status_of(self.db, run_pk) == "cancelled":
                self.stop(run_pk)


class Worker:
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
    ) -> None:
        self.db = db
        self.settings = settings
        self.models = models
        self.operator = operator or OperatorServers(settings)
        self.running = running or Running(db)
        self.wake = wake
        self.worker_id = name
        self.lease_ms = int(settings.run_lease_seconds * 1000)

    async def run_forever(self) -> None:
        while True:
            self.wake.clear()  # before looking: a notification during the claim is kept
            try:
                worked = await self.run_one()
            except Exception:
                log.exception("worker %s failed to run a turn", self.worker_id)
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)

    async def run_one(self) -> bool:
        """Claim and run one turn; False when there was none to claim.

        The turn runs in a child task while this one holds the lease. Cancelling the
        worker cancels its turn too, and waits for it to end. A turn that ended cancelled
        while the worker was not (a library raised ``CancelledError``, a model load it
        awaited was cancelled) is logged and the worker goes on: the run is left as it
        is, its lease lapses, and a later claim tries it again (counted against
        ``AICHATS_MAX_RUN_ATTEMPTS``, past which the reply fails).
        """
        run = await runs.claim(self.db, self.worker_id, self.lease_ms)
        if run is None:
            return False
        turn = asyncio.create_task(
            run_turn(self.db, self.settings, self.models, self.operator, run), name=f"aichats-turn-{run.id}"
        )
        self.running.turns[run.pk] = turn
        try:
            lost = await self._hold(run, turn)
        finally:
            del self.running.turns[run.pk]
            if not turn.done():  # this worker is being stopped: its turn stops with it
                turn.cancel()
                await asyncio.wait([turn])
        # Retrieved in every case, so asyncio never reports it as "never retrieved".
        error = None if turn.cancelled() else turn.exception()
        if run.pk in self.running.stopped:
            self.running.stopped.discard(run.pk)
            log.info("run %s was stopped by its user", run.id)
        elif lost or isinstance(error, LostRun):
            # Whatever else a lost turn raised on its way out (while being cancelled) goes with it.
            shown = None if isinstance(error, LostRun) else error
            log.warning("run %s was taken over by another worker", run.id, exc_info=shown)
        elif turn.cancelled():
            log.error(
                "the turn of run %s was cancelled, not by its worker; it is tried again when its lease lapses", run.id
            )
        elif error is not None:
            raise error  # what escaped the turn (it fails its reply on any error) is the worker's to log
        return True

    async def _hold(self, run: Claim, turn: asyncio.Task[None]) -> bool:
        """Renew the run's lease until its turn ends; True when the lease was lost, and
        the turn cancelled (and ended) for it.

        A renewal also finds nothing when the turn's own last write (``runs.finish``)
        committed just before it: the turn is then ending, not lost. So a turn that ends
        within ``FINISHING_SECONDS`` of a failed renewal is left to end by itself (a
        lost turn cannot write in that time either: every write it makes is fenced).
        """
        while True:
            done, _ = await asyncio.wait([turn], timeout=self.lease_ms / 3000)
            if done:
                return False
            try:
                renewed = await runs.renew(self.db, run, self.lease_ms)
            except Exception:  # the database blinked: try again at the next third of the lease
                log.exception("renewing the lease of run %s failed", run.id)
                continue
            if not renewed:
                done, _ = await asyncio.wait([turn], timeout=FINISHING_SECONDS)
                if done:
                    return False
                turn.cancel()
                await asyncio.wait([turn])
                return True


class Workers:
    """This process's ``count`` workers: one model cache, one wake-up (``aichats_runs``)."""

    def __init__(self, db: Database, settings: Settings, count: int) -> None:
        self.db = db
        self.settings = settings
        self.count = count
        self.models = Models(settings)
        self.operator = OperatorServers(settings)
        self.running = Running(db)
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
        """One service per worker, for the supervisor; worker ids name host and process."""
        prefix = f"{socket.gethostname()}:{os.getpid()}:{ids.new_id('w', 6)}"
        workers = [
            Worker(
                self.db,
                self.settings,
                self.models,
                self._wake,
                f"{prefix}:{n}",
                operator=self.operator,
                running=self.running,
            )
            for n in range(self.count)
        ]
        return [Service(f"worker-{n}", worker.run_forever) for n, worker in enumerate(workers)]

    async def close(self) -> None:
        await self.models.close()
