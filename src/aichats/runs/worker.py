"""Workers: claim runs, stream the agent's reply into the chat, account for its tokens.

A worker is a coroutine; ``aichats serve`` runs ``AICHATS_WORKERS`` of them beside the
API (the embedded default) and ``aichats worker`` runs them alone, as many processes as
wanted against one PostgreSQL. Model calls stream from their own threads or sockets, so
the event loop keeps serving. While a run executes, a heartbeat renews its lease; a
worker that dies stops renewing, and after ``AICHATS_RUN_LEASE_SECONDS`` another worker
claims the run again (up to ``AICHATS_MAX_RUN_ATTEMPTS`` tries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import sqlalchemy as sa

from aichats import ids
from aichats.agent import context
from aichats.agent.models import Model, ModelError, Usage, load_model, parse_spec
from aichats.clock import now_ms
from aichats.config import Settings
from aichats.runs import queue
from aichats.runs.queue import Claim
from aichats.scheduling import scheduler
from aichats.services import events, notifications, schedules, webhooks
from aichats.services.chats import CHAT_COLUMNS, AgentIdentifier, chat_json
from aichats.services.messages import MESSAGE_COLUMNS, RUNS_CHANNEL, count_message, insert_message, message_json
from aichats.storage.database import Connection, Database, Row
from aichats.storage.schema import ai_chats, messages

log = logging.getLogger("aichats.runs")

FLUSH_SECONDS = 0.05  # deltas are written (and streamed to watchers) at most this often
POLL_SECONDS = 1.0  # without a notification, look for work (and lapsed leases) this often
TITLE_LENGTH = 60

_c = ai_chats.c
_m = messages.c
_CHAT = sa.select(
    _c.pk, _c.id, _c.user_id, _c.agent_identifier, _c.title, _c.title_locked, _c.current_company_id, _c.deleted_at,
    _c.notification_preference,
).where(_c.pk == sa.bindparam("chat_pk"))  # fmt: skip
_MESSAGE_STATUS = sa.select(_m.status).where(_m.pk == sa.bindparam("message_pk"))
_RESTART_MESSAGE = (
    sa.update(messages)
    .where(_m.pk == sa.bindparam("message_pk"))
    .values(content="", status="streaming", error=None, completed_at=None, model=sa.bindparam("model"))
    .returning(*MESSAGE_COLUMNS)
)
# A pending reply becomes a message when it starts: that is its creation for the reader.
_START_MESSAGE = _RESTART_MESSAGE.values(created_at=sa.bindparam("now"))
_WRITE_CONTENT = sa.update(messages).where(_m.pk == sa.bindparam("message_pk")).values(content=sa.bindparam("content"))
_FINISH_MESSAGE = (
    sa.update(messages)
    .where(_m.pk == sa.bindparam("message_pk"))
    .values(
        content=sa.bindparam("content"),
        status=sa.bindparam("status"),
        error=sa.bindparam("error"),
        input_tokens=sa.bindparam("input_tokens"),
        output_tokens=sa.bindparam("output_tokens"),
        blended_tokens_micros=sa.bindparam("blended_tokens_micros"),
        completed_at=sa.bindparam("now"),
    )
    .returning(*MESSAGE_COLUMNS)
)
_ADD_USAGE = (
    sa.update(ai_chats)
    .where(_c.pk == sa.bindparam("chat_pk"))
    .values(
        blended_token_usage_micros=_c.blended_token_usage_micros + sa.bindparam("blended_tokens_micros"),
        updated_at=sa.bindparam("now"),
    )
    .returning(*CHAT_COLUMNS)
)
_FIRST_USER_MESSAGE = (
    sa.select(_m.content).where(_m.chat_pk == sa.bindparam("chat_pk"), _m.role == "user").order_by(_m.pk).limit(1)
)
_SET_TITLE = (
    sa.update(ai_chats)
    .where(_c.pk == sa.bindparam("chat_pk"), _c.title.is_(None), _c.title_locked == sa.false())
    .values(title=sa.bindparam("title"))
    .returning(*CHAT_COLUMNS)
)


class DeltaWriter:
    """Writes a streaming reply's text and ``message.delta`` events, coalesced.

    The first delta goes out at once (time to first token); later ones at most every
    ``FLUSH_SECONDS``, each write one small transaction. The transaction that completes or
    fails the reply deletes its deltas (:func:`events.compact_deltas`, after ``started``,
    the event that started it) and stores its final event with the whole text, so what is
    still pending then is never written as a delta.
    """

    def __init__(self, db: Database, chat: Row, message: Row, started: int) -> None:
        self.db = db
        self.chat_pk = chat["pk"]
        self.message = message
        self.started = started
        self.text = ""
        self.pending = ""
        self.last_write: float | None = None

    async def add(self, delta: str) -> None:
        self.text += delta
        self.pending += delta
        now = time.monotonic()
        if self.last_write is not None and now - self.last_write < FLUSH_SECONDS:
            return
        self.last_write = now
        async with self.db.transaction() as tx:
            await tx.execute(_WRITE_CONTENT, {"message_pk": self.message["pk"], "content": self.text})
            await self.flush(tx)

    async def flush(self, tx: Connection) -> None:
        if self.pending:
            # ``offset`` (in code points) makes a delta idempotent: a client that loaded the
            # message after this text was written can tell that it already has it.
            offset = len(self.text) - len(self.pending)
            delta = {"message_id": self.message["id"], "delta": self.pending, "offset": offset}
            await events.append(tx, self.chat_pk, events.MESSAGE_DELTA, delta)
            self.pending = ""


class LostRun(Exception):
    """The run's lease passed to another worker: stop, write nothing more."""


def generated_title(first_message: str) -> str:
    """A title from the chat's first message: its first line, cut at a word boundary."""
    line = re.sub(r"\s+", " ", first_message.strip().splitlines()[0] if first_message.strip() else "").strip()
    if len(line) <= TITLE_LENGTH:
        return line or "New chat"
    cut = line[:TITLE_LENGTH].rsplit(" ", 1)[0] or line[:TITLE_LENGTH]
    return cut.rstrip(",.;:") + "…"


_END: Any = object()


async def _next_within(stream: AsyncIterator[Any], seconds: float, name: str, timeout: float) -> Any:
    """The stream's next item, or ``_END``; a ModelError if none comes within ``seconds``.

    ``asyncio.timeout`` rather than ``wait_for``: no task per token (measured: 6 to 15 µs
    a token with ``wait_for``, the bulk of the server's per-token cost).
    """
    try:
        async with asyncio.timeout(seconds):
            return await anext(stream)
    except StopAsyncIteration:
        return _END
    except TimeoutError:
        raise ModelError(f"{name} did not answer within {timeout:g} s", transient=False) from None


class Models:
    """The models this process has loaded, one per ``provider:model`` (loading is slow).

    Concurrent first gets of one spec share one load (a task per spec), so workers that
    start cold together get one model, not one each (for a local model: one engine, not
    several). A load that fails is not kept: the next get tries again (a key or a model
    file may have been fixed since).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._models: dict[str, Model] = {}
        self._loading: dict[str, asyncio.Task[Model]] = {}

    async def get(self, spec: str) -> Model:
        model = self._models.get(spec)
        if model is not None:
            return model
        loading = self._loading.get(spec)
        if loading is None:
            loading = asyncio.create_task(self._load(spec), name=f"aichats-load-{spec}")
            self._loading[spec] = loading
        # Shielded: a caller that is cancelled (its run was lost) leaves the load to the others.
        return await asyncio.shield(loading)

    async def _load(self, spec: str) -> Model:
        try:
            if parse_spec(spec)[0] == "local":  # its engine is supervised by a task on this loop
                model = load_model(spec, self._settings)
            else:  # an SDK's first import takes about half a second: not on the event loop
                model = await anyio.to_thread.run_sync(load_model, spec, self._settings)
            self._models[spec] = model
            return model
        finally:
            del self._loading[spec]

    async def close(self) -> None:
        for loading in list(self._loading.values()):
            loading.cancel()
        for model in self._models.values():
            await model.close()


class Worker:
    def __init__(self, db: Database, settings: Settings, models: Models, wake: asyncio.Event, name: str) -> None:
        self.db = db
        self.settings = settings
        self.models = models
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
        """Claim and execute one run; False when there was none."""
        run = await queue.claim(self.db, self.worker_id, self.lease_ms)
        if run is None:
            return False
        execution = asyncio.current_task()
        assert execution is not None
        heartbeat = asyncio.create_task(self._heartbeat(run, execution))
        try:
            await self._execute(run)
        except (LostRun, asyncio.CancelledError):
            if heartbeat.done() and not heartbeat.cancelled() and heartbeat.result() is False:
                execution.uncancel()
                log.warning("run %s was taken over by another worker", run.id)
                return True
            raise
        finally:
            heartbeat.cancel()
        return True

    async def _heartbeat(self, run: Claim, execution: asyncio.Task[Any]) -> bool:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if not await queue.renew(self.db, run, self.lease_ms):
                execution.cancel()
                return False

    # ------------------------------------------------------------------ one turn

    async def _execute(self, run: Claim) -> None:
        chat = await self.db.fetch_one(_CHAT, {"chat_pk": run.chat_pk})
        assert chat is not None
        if chat["deleted_at"] is not None or run.user_message_pk is None:
            async with self.db.transaction() as tx:
                await queue.finish(tx, run, status="cancelled", error="the chat was deleted")
            return
        model_name = self.settings.model_for(chat["agent_identifier"])
        reply = DeltaWriter(self.db, chat, *await self._start_message(run, chat, model_name))
        try:
            if run.attempt > self.settings.max_run_attempts:
                raise ModelError(f"the reply was interrupted {run.attempt - 1} times", transient=False)
            model = await self.models.get(model_name)
            prompt = await context.build(self.db, self.settings, model, chat, reply.message["pk"])
            usage = None
            async for item in self._stream_with_retries(model, prompt):
                if isinstance(item, Usage):
                    usage = item
                else:
                    await reply.add(item)
            if usage is None:
                raise ModelError(f"{model.name} ended without reporting usage", transient=False)
        except ModelError as error:
            await self._fail(run, chat, reply, model_name, str(error))
            return
        except (LostRun, asyncio.CancelledError):
            raise
        except Exception as error:  # a bug or a broken file: fail this reply, not the worker
            log.exception("run %s failed unexpectedly", run.id)
            await self._fail(run, chat, reply, model_name, f"internal error: {type(error).__name__}")
            return
        await self._complete(run, chat, reply, model_name, usage)

    async def _start_message(self, run: Claim, chat: Row, model_name: str) -> tuple[Row, int]:
        """The reply starts streaming: its pending message (counted now), or on a retry the
        same message emptied; or, for a turn queued without one, a new message. Returns it
        and the id of its ``message.created`` event."""
        now = now_ms()
        async with self.db.transaction() as tx:
            if run.assistant_message_pk is not None:
                previous = await tx.fetch_one(_MESSAGE_STATUS, {"message_pk": run.assistant_message_pk})
                assert previous is not None
                start = {"message_pk": run.assistant_message_pk, "model": model_name, "now": now}
                if previous["status"] == "pending":
                    message = await tx.fetch_one(_START_MESSAGE, start)
                    await count_message(tx, chat["pk"], now)
                else:  # a retry after a lost worker: the same message, emptied
                    message = await tx.fetch_one(_RESTART_MESSAGE, start)
                assert message is not None
            else:
                message = await insert_message(
                    tx, chat["pk"], now, role="assistant", content="", status="streaming", source="agent",
                    model=model_name,
                )  # fmt: skip
                if not await queue.set_message(tx, run, message["pk"]):
                    raise LostRun(run.id)
            started = await events.append(tx, chat["pk"], events.MESSAGE_CREATED, message_json(message, chat["id"]))
            if run.attempt > 1:  # a lost attempt may have streamed: its deltas are stale now
                await events.compact_deltas(tx, chat["pk"], after=0)
        return message, started

    async def _stream_with_retries(self, model: Model, prompt: list[Any]) -> AsyncIterator[str | Usage]:
        """The model's stream; transient failures before the first token are retried with
        backoff until ``AICHATS_MODEL_TIMEOUT_SECONDS`` has passed, and silence longer than
        that ends the reply."""
        timeout = self.settings.model_timeout_seconds
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            started = False
            stream = model.stream(prompt, max_output_tokens=self.settings.max_output_tokens).__aiter__()
            try:
                while True:
                    remaining = timeout if started else max(deadline - time.monotonic(), 0.001)
                    item = await _next_within(stream, remaining, model.name, timeout)
                    if item is _END:
                        return
                    started = True
                    yield item
            except ModelError as error:
                if started or not error.transient or time.monotonic() + delay >= deadline:
                    raise
                log.info("%s failed (%s); retrying in %.1f s", model.name, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # type: ignore[attr-defined]

    async def _complete(self, run: Claim, chat: Row, reply: DeltaWriter, model: str, usage: Usage) -> None:
        blended = self.settings.blended_micros(model, usage.input_tokens, usage.output_tokens)
        now = now_ms()
        async with self.db.transaction() as tx:
            if not await queue.finish(
                tx, run, status="completed", model=model, input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens, blended_tokens_micros=blended,
            ):  # fmt: skip
                raise LostRun(run.id)
            done = await tx.fetch_one(
                _FINISH_MESSAGE,
                {
                    "message_pk": reply.message["pk"], "content": reply.text, "status": "completed", "error": None,
                    "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                    "blended_tokens_micros": blended, "now": now,
                },
            )  # fmt: skip
            assert done is not None
            updated = await tx.fetch_one(
                _ADD_USAGE, {"chat_pk": chat["pk"], "blended_tokens_micros": blended, "now": now}
            )
            titled = await self._title(tx, chat)
            completed = message_json(done, chat["id"])
            await events.append(tx, chat["pk"], events.MESSAGE_COMPLETED, completed)
            await events.append(tx, chat["pk"], events.CHAT_UPDATED, chat_json(titled or updated))
            await events.compact_deltas(tx, chat["pk"], after=reply.started)
            await self._tell_user(tx, chat, completed, titled or updated)

    async def _tell_user(
        self, tx: Connection, chat: Row, message: dict[str, Any], chat_now: Row | None, run: Claim | None = None
    ) -> None:
        """Notification and badge (unless muted) and webhooks, in the reply's own transaction."""
        chat = await _current(tx, chat)
        title = chat["title"] or "AI chat"
        if message["status"] == "completed":
            body = message["content"][:200]
            await webhooks.enqueue(
                tx, chat["user_id"], "ai_chat.message.completed", {"ai_chat": chat_json(chat_now), "message": message}
            )
        else:
            body = f"The reply failed: {message['error']}"
            assert run is not None
            failed = {"ai_chat_id": chat["id"], "run_id": run.id, "trigger": run.trigger, "error": message["error"]}
            await webhooks.enqueue(tx, chat["user_id"], "ai_chat.run.failed", failed)
        await notifications.notify(tx, chat, kind="ai_chat.reply", title=title, body=body, message_id=message["id"])

    async def _schedule_deactivated(self, tx: Connection, chat: Row) -> None:
        limit = self.settings.schedule_max_failures
        log.warning("the schedule of chat %s failed %d times in a row: deactivated", chat["id"], limit)
        chat = await _current(tx, chat)
        body = f"The schedule failed {limit} times in a row and was turned off."
        await notifications.schedule_deactivated(tx, chat, body=body, details={"consecutive_failures": limit})

    async def _title(self, tx: Connection, chat: Row) -> Row | None:
        if chat["title"] is not None or chat["title_locked"]:
            return None
        first = await tx.fetch_one(_FIRST_USER_MESSAGE, {"chat_pk": chat["pk"]})
        if first is None:
            return None
        return await tx.fetch_one(_SET_TITLE, {"chat_pk": chat["pk"], "title": generated_title(first["content"])})

    async def _fail(self, run: Claim, chat: Row, reply: DeltaWriter, model: str, error: str) -> None:
        log.warning("run %s failed: %s", run.id, error)
        async with self.db.transaction() as tx:
            if not await queue.finish(tx, run, status="failed", error=error, model=model):
                raise LostRun(run.id)
            failed = await tx.fetch_one(
                _FINISH_MESSAGE,
                {
                    "message_pk": reply.message["pk"], "content": reply.text, "status": "failed", "error": error,
                    "input_tokens": 0, "output_tokens": 0, "blended_tokens_micros": 0, "now": now_ms(),
                },
            )  # fmt: skip
            assert failed is not None
            failure = message_json(failed, chat["id"])
            await events.append(tx, chat["pk"], events.MESSAGE_FAILED, failure)
            await events.compact_deltas(tx, chat["pk"], after=reply.started)
            await self._tell_user(tx, chat, failure, None, run=run)
            if run.trigger == "schedule" and await schedules.record_outcome(
                tx, chat["pk"], succeeded=False, max_failures=self.settings.schedule_max_failures
            ):
                await self._schedule_deactivated(tx, chat)


async def _current(tx: Connection, chat: Row) -> Row:
    """The chat as it is now (the user may have muted it while the reply streamed)."""
    row = await tx.fetch_one(_CHAT, {"chat_pk": chat["pk"]})
    assert row is not None
    return row


class WorkerPool:
    """``count`` workers in this process, woken by ``aichats_runs`` notifications."""

    def __init__(self, db: Database, settings: Settings, count: int) -> None:
        self.db = db
        self.settings = settings
        self.count = count
        self.models = Models(settings)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.count:  # a local model's engine starts loading now, not on the first reply
            for agent in AgentIdentifier:
                try:
                    await self.models.get(self.settings.model_for(agent.value))
                except (ModelError, ValueError) as error:  # each reply will say so too
                    log.error("the %s agent's model cannot be used: %s", agent.value, error)
        await self.db.listen(RUNS_CHANNEL, lambda _payload: self._wake.set())
        prefix = f"{socket.gethostname()}:{os.getpid()}:{ids.new_id('w', 6)}"
        for n in range(self.count):
            worker = Worker(self.db, self.settings, self.models, self._wake, f"{prefix}:{n}")
            self._tasks.append(asyncio.create_task(worker.run_forever(), name=f"aichats-worker-{n}"))
        if self.count:
            self._tasks.append(asyncio.create_task(self._schedule_forever(), name="aichats-scheduler"))
            self._tasks.append(asyncio.create_task(self._deliver_forever(), name="aichats-webhooks"))

    async def _deliver_forever(self) -> None:
        """Send due webhook deliveries; wake on ``aichats_webhooks`` or every second."""
        wake = asyncio.Event()
        await self.db.listen(webhooks.CHANNEL, lambda _payload: wake.set())
        async with webhooks.sender(allow_private=self.settings.webhooks_allow_private_urls) as http:
            while True:
                wake.clear()
                try:
                    sent = await webhooks.deliver_one(
                        self.db,
                        http,
                        retry_seconds=self.settings.webhook_retry_seconds,
                    )
                except Exception:
                    log.exception("webhook delivery failed")
                    sent = False
                if not sent:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), POLL_SECONDS)

    async def _schedule_forever(self) -> None:
        """A scheduling pass about every ``AICHATS_SCHEDULER_INTERVAL_SECONDS``."""
        while True:
            try:
                await scheduler.tick(self.db, max_in_flight=self.settings.schedule_max_in_flight)
            except Exception:
                log.exception("scheduling pass failed")
            await asyncio.sleep(self.settings.scheduler_interval_seconds)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.models.close()
