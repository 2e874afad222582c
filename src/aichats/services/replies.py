"""A reply's lifecycle, in one place: queued, started, streamed, finished, retried.

An agent reply is a message (``messages``) written by a run (``runs``) in a chat
(``ai_chats``). Queueing is :func:`aichats.services.runs.queue`, called in the transaction
that stores the user's message and its pending reply (:func:`messages.add_user_message`,
which a new chat's first message goes through too, :func:`messages.create_chat`; so it
sits in ``messages``, below this module) or, for a failed reply, by :func:`retry` here.
A worker that claimed the run then calls :func:`start`, :meth:`Reply.append` for each
piece of text, and :meth:`Reply.complete` or :meth:`Reply.fail`. Either of those ends in
one "reply finished" step (:meth:`Reply._finished`), which reads the chat and the user's
webhooks once and fans out: the notification and badge (the users channel's push), the
webhooks, and a scheduled turn's outcome.

Every write of a run is fenced by its attempt: when another worker took the run over
(this one's lease lapsed), the write finds nothing and :class:`LostRun` is raised, and
the transaction it was in rolls back, so a lost run writes nothing more.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aichats.clock import now_ms
from aichats.errors import Conflict
from aichats.services import chats, events, messages, notifications, runs, schedules, tool_calls, webhooks
from aichats.services.runs import Claim
from aichats.services.tool_calls import NewCall, ToolCallRow
from aichats.storage.database import Connection, Database, Row

log = logging.getLogger("aichats.runs")

FLUSH_SECONDS = 0.05  # deltas are written (and streamed to watchers) at most this often
TITLE_LENGTH = 60


class LostRun(Exception):
    """The run's lease passed to another worker: stop, write nothing more."""


def generated_title(first_message: str) -> str:
    """A title from the chat's first message: its first line, cut at a word boundary."""
    line = re.sub(r"\s+", " ", first_message.strip().splitlines()[0] if first_message.strip() else "").strip()
    if len(line) <= TITLE_LENGTH:
        return line or "New chat"
    cut = line[:TITLE_LENGTH].rsplit(" ", 1)[0] or line[:TITLE_LENGTH]
    return cut.rstrip(",.;:") + "…"


async def retry(tx: Connection, *, chat_pk: int, chat_id: str, message_id: str, now: int) -> Row:
    """Put a failed reply back to ``pending`` and queue a new turn for it (a ``retry`` run).

    The reply keeps its place after the message it answers. It goes back to being an
    uncounted pending reply, so the worker that starts it counts it once, as any other.
    """
    reply = await messages.reset_reply(tx, chat_pk, message_id, now)
    answered = await runs.answered_by(tx, chat_pk, reply["pk"])
    if answered is None:
        raise Conflict("this reply answers no message, so it cannot be retried")
    await runs.queue(
        tx, chat_pk, trigger="retry", user_message_pk=answered, reply_pk=reply["pk"], scheduled_for=None, now=now
    )
    await events.append(tx, chat_pk, events.MESSAGE_RETRIED, messages.message_json(reply, chat_id))
    return reply


async def stop(
    tx: Connection, *, chat_pk: int, chat_id: str, message_id: str, blended_micros: Callable[[str, int, int], int]
) -> Row:
    """The user stops a reply that has not ended: its run is cancelled (its worker, in any
    process, cancels the turn at once), its calls that have not run are denied, and it ends
    ``cancelled`` with what it wrote and what its finished steps cost (added to the chat's
    usage: those tokens were used). ``blended_micros``: the settings' weighting."""
    now = now_ms()
    target = await messages.reply_to_cancel(tx, chat_pk, message_id)
    # The run first (its row locked until commit), as a decision on a tool call does: the
    # two, racing, then wait for each other instead of deadlocking.
    run_pk = await runs.cancel(tx, chat_pk, target["pk"], now)
    input_tokens = output_tokens = blended = 0
    ended: list[ToolCallRow] = []
    if run_pk is not None:
        input_tokens, output_tokens = await tool_calls.step_usage(tx, run_pk)
        ended = await tool_calls.stop_unfinished(tx, run_pk)
    model = await messages.model_of(tx, target["pk"])
    if input_tokens or output_tokens:
        blended = blended_micros(model or "", input_tokens, output_tokens)
    reply = await messages.cancel_reply(
        tx, chat_pk, target, input_tokens=input_tokens, output_tokens=output_tokens, blended_tokens_micros=blended,
        now=now,
    )  # fmt: skip
    if reply is None:  # stopped by another request meanwhile
        raise Conflict("this reply was stopped already: there is nothing to stop")
    chat = await chats.add_usage(tx, chat_pk, blended, now)
    for call in ended:
        await events.append(tx, chat_pk, events.TOOL_CALL_COMPLETED, _call_event(message_id, call))
    calls = (await tool_calls.of_messages(tx, [reply["pk"]])).get(reply["pk"])
    await events.append(tx, chat_pk, events.MESSAGE_CANCELLED, messages.message_json(reply, chat_id, calls))
    await events.append(tx, chat_pk, events.CHAT_UPDATED, chats.chat_json(chat))
    return reply


def _call_event(message_id: str, call: ToolCallRow) -> dict[str, Any]:
    return {"message_id": message_id, "tool_call": tool_calls.tool_call_json(call)}


async def decide(tx: Connection, *, chat_pk: int, chat_id: str, tool_call_id: str, approve: bool) -> ToolCallRow:
    """The user approves or denies a call that waits: once no call of its run waits any
    more, the run is queued again and its turn goes on (:func:`aichats.runs.turn.run_turn`)."""
    found = await tool_calls.find(tx, chat_pk, tool_call_id)
    # The run's row first, locked until commit: two decisions on one step, or a decision and
    # a Stop, take turns, so the last decision sees the others' and queues the run once.
    await runs.lock(tx, found["run_pk"])
    call = await tool_calls.decide(tx, found, approve=approve)
    if call["status"] == tool_calls.DENIED:  # an approved call says so when it runs (tool_call.started)
        message_id = await messages.id_of(tx, call["message_pk"])
        await events.append(tx, chat_pk, events.TOOL_CALL_COMPLETED, _call_event(message_id, call))
    if not await tool_calls.awaiting(tx, call["run_pk"]):
        await runs.resume(tx, call["run_pk"])
    return call


async def cancel(db: Database, run: Claim, reason: str) -> None:
    """End a run that has nothing to answer (its chat was deleted)."""
    async with db.transaction() as tx:
        await runs.finish(tx, run, status="cancelled", error=reason)


async def start(
    db: Database, run: Claim, chat: Row, *, model: str, schedule_max_failures: int, text: str = ""
) -> Reply:
    """The reply starts streaming: its pending message (counted now), or on a retry after a
    lost worker (or once a tool call it waited for was decided) the same message, from
    ``text`` (what its stored steps wrote); or, for a turn queued without one, a new message.

    ``chat`` is the chat as the turn started (:func:`chats.chat_of_turn`).
    """
    now = now_ms()
    async with db.transaction() as tx:
        if not await runs.hold(tx, run):  # stopped (or taken over) since it was claimed
            raise LostRun(run.id)
        if run.assistant_message_pk is not None:
            message = await messages.start_reply(
                tx, chat["pk"], run.assistant_message_pk, model=model, now=now, text=text
            )
        else:
            message = await messages.insert_message(
                tx, chat["pk"], now, role="assistant", content="", status="streaming", source="agent", model=model
            )
            if not await runs.set_message(tx, run, message["pk"]):
                raise LostRun(run.id)
        created = messages.message_json(message, chat["id"])
        started = await events.append(tx, chat["pk"], events.MESSAGE_CREATED, created)
        if run.attempt > 1:  # a lost attempt may have streamed: its deltas are stale now
            await events.compact_deltas(tx, chat["pk"], after=0)
    reply = Reply(db, run, chat, message, started, model=model, schedule_max_failures=schedule_max_failures)
    reply.text = text
    return reply


class Reply:
    """One reply as its run writes it.

    Text is written coalesced: the first delta at once (time to first token), later ones
    at most every ``FLUSH_SECONDS``, each write one small transaction with its
    ``message.delta`` event. The transaction that completes or fails the reply deletes its
    deltas (:func:`events.compact_deltas`, after ``started``, the event that started it)
    and stores its final event with the whole text, so what is still pending then is never
    written as a delta.
    """

    def __init__(
        self, db: Database, run: Claim, chat: Row, message: Row, started: int, *, model: str, schedule_max_failures: int
    ) -> None:
        self.db = db
        self.run = run
        self.chat = chat
        self.message = message
        self.started = started
        self.model = model
        self.schedule_max_failures = schedule_max_failures
        self.text = ""
        self.pending = ""
        self.last_write: float | None = None
        self.calls: dict[int, ToolCallRow] = {}  # its tool calls, by pk, as they are now
        self.new_step = False  # the next text starts a new model call's: set it apart
        self.waiting = False  # set aside until the user decides on a tool call

    async def append(self, delta: str) -> None:
        if self.new_step and self.text and delta:
            delta = "\n\n" + delta.lstrip("\n")
        self.new_step = self.new_step and not delta
        self.text += delta
        self.pending += delta
        now = time.monotonic()
        if self.last_write is not None and now - self.last_write < FLUSH_SECONDS:
            return
        self.last_write = now
        async with self.db.transaction() as tx:
            await messages.write_reply(tx, self.message["pk"], self.text)
            await self._flush(tx)

    async def _flush(self, tx: Connection) -> None:
        if self.pending:
            # ``offset`` (in code points) makes a delta idempotent: a client that loaded the
            # message after this text was written can tell that it already has it.
            offset = len(self.text) - len(self.pending)
            delta = {"message_id": self.message["id"], "delta": self.pending, "offset": offset}
            await events.append(tx, self.chat["pk"], events.MESSAGE_DELTA, delta)
            self.pending = ""

    async def complete(self, *, input_tokens: int, output_tokens: int, blended_tokens_micros: int) -> None:
        """The reply is whole: it, its run and its chat's usage (and title) in one transaction."""
        now = now_ms()
        chat_pk = self.chat["pk"]
        async with self.db.transaction() as tx:
            if not await runs.finish(
                tx, self.run, status="completed", model=self.model, input_tokens=input_tokens,
                output_tokens=output_tokens, blended_tokens_micros=blended_tokens_micros,
            ):  # fmt: skip
                raise LostRun(self.run.id)
            done = await messages.finish_reply(
                tx, self.message["pk"], content=self.text, status="completed", error=None, input_tokens=input_tokens,
                output_tokens=output_tokens, blended_tokens_micros=blended_tokens_micros, now=now,
            )  # fmt: skip
            chat = await chats.add_usage(tx, chat_pk, blended_tokens_micros, now)
            chat = await self._title(tx) or chat
            completed = messages.message_json(done, self.chat["id"], self._calls())
            await events.append(tx, chat_pk, events.MESSAGE_COMPLETED, completed)
            await events.append(tx, chat_pk, events.CHAT_UPDATED, chats.chat_json(chat))
            await events.compact_deltas(tx, chat_pk, after=self.started)
            await self._finished(tx, chat, completed)

    async def fail(
        self, error: str, *, input_tokens: int = 0, output_tokens: int = 0, blended_tokens_micros: int = 0
    ) -> None:
        """The reply failed: it keeps what streamed, with the error; its run fails too. The
        model calls it finished before failing still count (their tokens were used)."""
        log.warning("run %s failed: %s", self.run.id, error)
        chat_pk = self.chat["pk"]
        now = now_ms()
        async with self.db.transaction() as tx:
            if not await runs.finish(
                tx, self.run, status="failed", error=error, model=self.model, input_tokens=input_tokens,
                output_tokens=output_tokens, blended_tokens_micros=blended_tokens_micros,
            ):  # fmt: skip
                raise LostRun(self.run.id)
            failed = await messages.finish_reply(
                tx, self.message["pk"], content=self.text, status="failed", error=error, input_tokens=input_tokens,
                output_tokens=output_tokens, blended_tokens_micros=blended_tokens_micros, now=now,
            )  # fmt: skip
            if blended_tokens_micros:
                await chats.add_usage(tx, chat_pk, blended_tokens_micros, now)
            failure = messages.message_json(failed, self.chat["id"], self._calls())
            await events.append(tx, chat_pk, events.MESSAGE_FAILED, failure)
            await events.compact_deltas(tx, chat_pk, after=self.started)
            await self._finished(tx, await chats.current_chat(tx, chat_pk), failure)

    # ------------------------------------------------------------------------- tool calls

    def _calls(self) -> list[ToolCallRow]:
        return sorted(self.calls.values(), key=lambda call: (call["step"], call["position"]))

    def _event(self, call: ToolCallRow) -> dict[str, Any]:
        self.calls[call["pk"]] = call
        return _call_event(self.message["id"], call)

    async def record_step(
        self, step: int, text: str, *, input_tokens: int, output_tokens: int, calls: list[NewCall]
    ) -> list[ToolCallRow]:
        """A model call that asked for tools ended: it and its calls are stored (what a
        resumed turn replays), with the text written so far."""
        async with self.db.transaction() as tx:
            if not await runs.hold(tx, self.run):
                raise LostRun(self.run.id)
            rows = await tool_calls.record_step(
                tx, chat_pk=self.chat["pk"], run_pk=self.run.pk, message_pk=self.message["pk"], step=step, text=text,
                input_tokens=input_tokens, output_tokens=output_tokens, calls=calls,
            )  # fmt: skip
            await messages.write_reply(tx, self.message["pk"], self.text)
            await self._flush(tx)
        for row in rows:
            self.calls[row["pk"]] = row
        self.new_step = True
        return rows

    def resumed(self, calls: list[ToolCallRow]) -> None:
        """The calls its stored steps made (a resumed turn), so that its events list them."""
        for call in calls:
            self.calls[call["pk"]] = call
        self.new_step = bool(self.text)

    async def call_started(self, call: ToolCallRow) -> ToolCallRow | None:
        """The call runs now (None: it can no longer run); fenced, as every write of the run."""
        async with self.db.transaction() as tx:
            if not await runs.hold(tx, self.run):
                raise LostRun(self.run.id)
            started = await tool_calls.start(tx, call["pk"], now_ms())
            if started is not None:
                await events.append(tx, self.chat["pk"], events.TOOL_CALL_STARTED, self._event(started))
        return started

    async def call_finished(
        self, call: ToolCallRow, *, status: str, result: str, is_error: bool, duration_ms: int | None
    ) -> ToolCallRow:
        """The call's outcome; fenced, as every write of the run (a Stop or another worker
        that took the run over ended it: :class:`LostRun`)."""
        async with self.db.transaction() as tx:
            if not await runs.hold(tx, self.run):
                raise LostRun(self.run.id)
            row = await tool_calls.finish(
                tx, call["pk"], status=status, result=result, is_error=is_error, duration_ms=duration_ms, now=now_ms()
            )
            if row is None:
                raise LostRun(self.run.id)
            await events.append(tx, self.chat["pk"], events.TOOL_CALL_COMPLETED, self._event(row))
        return row

    async def wait_for_approval(self, calls: list[ToolCallRow]) -> None:
        """Calls that change things wait for the user: the reply is ``waiting``, its run is
        set aside (no worker holds it), and the user is asked (events, and a notification
        unless the chat is muted)."""
        chat_pk = self.chat["pk"]
        async with self.db.transaction() as tx:
            if not await runs.suspend(tx, self.run):
                raise LostRun(self.run.id)
            for call in calls:
                if call["status"] == tool_calls.REQUESTED:
                    call = await tool_calls.await_approval(tx, call["pk"])
                await events.append(tx, chat_pk, events.TOOL_CALL_APPROVAL_REQUIRED, self._event(call))
            waiting = await messages.suspend_reply(tx, self.message["pk"], self.text)
            if waiting is None:
                raise LostRun(self.run.id)
            self.pending = ""
            await events.append(
                tx, chat_pk, events.MESSAGE_WAITING, messages.message_json(waiting, self.chat["id"], self._calls())
            )
            chat = await chats.current_chat(tx, chat_pk)
            names = ", ".join(call["name"] for call in calls)
            self.waiting = True
            await notifications.notify(
                tx, chat, kind="ai_chat.approval", title=chat["title"] or "AI chat",
                body=f"The agent asks to run {names}: approve or deny it in the chat.", message_id=self.message["id"],
            )  # fmt: skip

    async def _title(self, tx: Connection) -> Row | None:
        """A first reply titles a chat that has no title (unless the user cleared it)."""
        if self.chat["title"] is not None or self.chat["title_locked"]:
            return None
        first = await messages.first_user_message(tx, self.chat["pk"])
        if first is None:
            return None
        return await chats.set_generated_title(tx, self.chat["pk"], generated_title(first))

    async def _finished(self, tx: Connection, chat: Row, message: dict[str, Any]) -> None:
        """The reply finished: tell its user, in the reply's own transaction.

        ``chat`` is the chat as it is now (the user may have muted it while the reply
        streamed), read once; the user's webhooks are read once too, for every event:
        the reply's webhook (``ai_chat.message.completed`` or ``ai_chat.run.failed``), the
        notification and badge (unless muted) with its ``notification.created``, and for a
        scheduled turn its outcome, which after too many failures in a row turns the
        schedule off (``ai_chat.schedule.deactivated`` and a notification).
        """
        subscribed = await webhooks.subscriptions(tx, chat["user_id"])
        succeeded = message["status"] == "completed"
        if succeeded:
            body = message["content"][:200]
            completed = {"ai_chat": chats.chat_json(chat), "message": message}
            await webhooks.enqueue(tx, chat["user_id"], "ai_chat.message.completed", completed, subscribed=subscribed)
        else:
            body = f"The reply failed: {message['error']}"
            failed = {"ai_chat_id": chat["id"], "run_id": self.run.id, "trigger": self.run.trigger}
            failed["error"] = message["error"]
            await webhooks.enqueue(tx, chat["user_id"], "ai_chat.run.failed", failed, subscribed=subscribed)
        title = chat["title"] or "AI chat"
        await notifications.notify(
            tx, chat, kind="ai_chat.reply", title=title, body=body, message_id=message["id"], subscribed=subscribed
        )
        if self.run.trigger != "schedule":
            return
        limit = self.schedule_max_failures
        if await schedules.record_outcome(tx, chat["pk"], succeeded=succeeded, max_failures=limit):
            log.warning("the schedule of chat %s failed %d times in a row: deactivated", chat["id"], limit)
            body = f"The schedule failed {limit} times in a row and was turned off."
            details = {"consecutive_failures": limit}
            await notifications.schedule_deactivated(tx, chat, body=body, details=details, subscribed=subscribed)
