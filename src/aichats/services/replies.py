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
from typing import Any

from aichats.clock import now_ms
from aichats.errors import Conflict
from aichats.services import chats, events, messages, notifications, runs, schedules, webhooks
from aichats.services.runs import Claim
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
    reply = await messages.reset_failed_reply(tx, chat_pk, message_id, now)
    answered = await runs.answered_by(tx, chat_pk, reply["pk"])
    if answered is None:
        raise Conflict("this reply answers no message, so it cannot be retried")
    await runs.queue(
        tx, chat_pk, trigger="retry", user_message_pk=answered, reply_pk=reply["pk"], scheduled_for=None, now=now
    )
    await events.append(tx, chat_pk, events.MESSAGE_RETRIED, messages.message_json(reply, chat_id))
    return reply


async def cancel(db: Database, run: Claim, reason: str) -> None:
    """End a run that has nothing to answer (its chat was deleted)."""
    async with db.transaction() as tx:
        await runs.finish(tx, run, status="cancelled", error=reason)


async def start(db: Database, run: Claim, chat: Row, *, model: str, schedule_max_failures: int) -> Reply:
    """The reply starts streaming: its pending message (counted now), or on a retry after a
    lost worker the same message emptied; or, for a turn queued without one, a new message.

    ``chat`` is the chat as the turn started (:func:`chats.chat_of_turn`).
    """
    now = now_ms()
    async with db.transaction() as tx:
        if run.assistant_message_pk is not None:
            message = await messages.start_reply(tx, chat["pk"], run.assistant_message_pk, model=model, now=now)
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
    return Reply(db, run, chat, message, started, model=model, schedule_max_failures=schedule_max_failures)


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

    async def append(self, delta: str) -> None:
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
            completed = messages.message_json(done, self.chat["id"])
            await events.append(tx, chat_pk, events.MESSAGE_COMPLETED, completed)
            await events.append(tx, chat_pk, events.CHAT_UPDATED, chats.chat_json(chat))
            await events.compact_deltas(tx, chat_pk, after=self.started)
            await self._finished(tx, chat, completed)

    async def fail(self, error: str) -> None:
        """The reply failed: it keeps what streamed, with the error; its run fails too."""
        log.warning("run %s failed: %s", self.run.id, error)
        chat_pk = self.chat["pk"]
        async with self.db.transaction() as tx:
            if not await runs.finish(tx, self.run, status="failed", error=error, model=self.model):
                raise LostRun(self.run.id)
            failed = await messages.finish_reply(
                tx, self.message["pk"], content=self.text, status="failed", error=error, input_tokens=0,
                output_tokens=0, blended_tokens_micros=0, now=now_ms(),
            )  # fmt: skip
            failure = messages.message_json(failed, self.chat["id"])
            await events.append(tx, chat_pk, events.MESSAGE_FAILED, failure)
            await events.compact_deltas(tx, chat_pk, after=self.started)
            await self._finished(tx, await chats.current_chat(tx, chat_pk), failure)

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
