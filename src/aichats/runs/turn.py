"""One agent turn: a claimed run's reply, from its model's stream into the chat.

The reply's writes are :mod:`aichats.services.replies`'; this module is the agent's side:
which model, what prompt, which tools, the stream with its retries and its silence limit,
and the loop that calls tools (docs/tools.md): model, tool calls, results, model... Every
model call that asked for tools, and every tool call, is stored as it ends, so a turn
resumed (after a crash, or once the user approved a call) replays them instead of making
them again. A turn runs as a child task of its worker (:mod:`aichats.runs.worker`), which
cancels it when the run's lease is lost or the user stops the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, TypeVar

import anyio.to_thread
import orjson

from aichats import crypto
from aichats.agent import context
from aichats.agent.models import (
    ChatMessage,
    Model,
    ModelError,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
    load_model,
    parse_spec,
)
from aichats.config import Settings
from aichats.errors import NotFound
from aichats.observability import metrics
from aichats.services import chats, replies, schedules, tool_calls
from aichats.services.replies import LostRun
from aichats.services.runs import Claim
from aichats.storage.database import Database, Row
from aichats.tools import builtin
from aichats.tools import toolbox as toolbox_
from aichats.tools.operator import OperatorServers

T = TypeVar("T")
log = logging.getLogger("aichats.runs")

_END: Any = object()


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


async def run_turn(db: Database, settings: Settings, models: Models, operator: OperatorServers, run: Claim) -> None:
    """Write the run's reply: started, streamed (calling tools as the model asks), then
    completed, failed, or set aside until the user approves a tool call.

    A model's failure, or any other exception (a bug, a broken file), fails this reply,
    not the worker. :class:`LostRun` and cancellation (the lease was lost, or the user
    stopped the reply) pass through: a lost run writes nothing more.
    """
    chat = await chats.chat_of_turn(db, run.chat_pk)
    assert chat is not None
    if chat["deleted_at"] is not None or run.user_message_pk is None:
        await replies.cancel(db, run, "the chat was deleted")
        return
    model_name = settings.model_for(chat["agent_identifier"])
    done = await tool_calls.progress(db, run.pk)
    reply = await replies.start(
        db, run, chat, model=model_name, schedule_max_failures=settings.schedule_max_failures, text=_written(done)
    )
    reply.resumed([call for calls in done.calls.values() for call in calls])
    used = Usage(done.input_tokens, done.output_tokens)
    try:
        if run.attempt - run.resumes > settings.max_run_attempts:
            raise ModelError(f"the reply was interrupted {run.attempt - run.resumes - 1} times", transient=False)
        model = await models.get(model_name)
        async with await _toolbox(db, settings, operator, chat, run, model) as toolbox:
            # The tools' descriptions take room in the model's window too.
            specs = orjson.dumps([dataclasses.asdict(spec) for spec in toolbox.specs]).decode()
            offered = await model.count_tokens(specs) if toolbox.specs else 0
            prompt = await context.build(db, settings, model, chat, reply.message["pk"], reserved=offered)
            used = await _loop(settings, model, toolbox, reply, prompt, done, used)
    except ModelError as error:
        await reply.fail(str(error), **_usage(settings, model_name, used))
        return
    except LostRun:
        raise
    except Exception as error:
        log.exception("run %s failed unexpectedly", run.id)
        await reply.fail(f"internal error: {type(error).__name__}", **_usage(settings, model_name, used))
        return
    if reply.waiting:
        return
    await reply.complete(**_usage(settings, model_name, used))


def _usage(settings: Settings, model_name: str, used: Usage) -> dict[str, int]:
    blended = settings.blended_micros(model_name, used.input_tokens, used.output_tokens)
    return {"input_tokens": used.input_tokens, "output_tokens": used.output_tokens, "blended_tokens_micros": blended}


def _written(done: tool_calls.Progress) -> str:
    """What a resumed reply had written: its stored steps' text."""
    return "\n\n".join(step["text"] for step in done.steps if step["text"])


async def _toolbox(
    db: Database, settings: Settings, operator: OperatorServers, chat: Row, run: Claim, model: Model
) -> toolbox_.Toolbox:
    """The tools this turn may use: the chat's choice, or its schedule's for a scheduled turn
    (none for a local model, unless ``AICHATS_LOCAL_TOOL_CHOICE`` says otherwise)."""
    context_ = builtin.Context(db, settings, chat["pk"], chat["id"])
    local = parse_spec(model.name)[0] == "local"
    if local and settings.local_tool_choice == "none":
        return toolbox_.Toolbox([], context_)
    selection = chats.tools_of(chat["tools"])
    scheduled = run.trigger == "schedule"
    allow_changes = False
    if scheduled:
        try:
            schedule = await schedules.get_schedule(db, chat["pk"])
        except NotFound:  # deleted since it fired: the chat's choice, nothing that changes things
            pass
        else:
            allow_changes = bool(schedule["allow_changes"])
            if schedule["tools"] is not None:
                selection = chats.tools_of(schedule["tools"])
    everything = await toolbox_.available(db, operator, chat["user_id"], crypto.sealer(settings))
    tools = toolbox_.selected(everything, selection)
    first: ToolChoice = "required" if local and settings.local_tool_choice == "required" else "auto"
    return toolbox_.Toolbox(tools, context_, scheduled=scheduled, allow_changes=allow_changes, first_choice=first)


async def _loop(
    settings: Settings,
    model: Model,
    toolbox: toolbox_.Toolbox,
    reply: replies.Reply,
    prompt: list[ChatMessage],
    done: tool_calls.Progress,
    used: Usage,
) -> Usage:
    """Model, tool calls, results, model... until the model answers without calling a tool
    (or the reply waits for an approval); the usage of every model call, summed."""
    step = len(done.steps)
    last = done.calls.get(step - 1, [])
    if any(call["status"] not in tool_calls.FINAL for call in last):  # resumed mid-step: finish it first
        conversation = [*prompt, *_replayed(done, step - 1), _asked(done.steps[-1]["text"], last)]
        results = await _run_calls(toolbox, reply, last)
        if results is None:
            return used
        conversation += results
    else:
        conversation = [*prompt, *_replayed(done, step)]
    while True:
        choice: ToolChoice = (
            "none" if step >= settings.max_tool_steps else toolbox.first_choice if step == 0 else "auto"
        )
        text, calls, usage = await _model_call(settings, model, conversation, toolbox, reply, choice)
        used = Usage(used.input_tokens + usage.input_tokens, used.output_tokens + usage.output_tokens)
        if not calls:
            return used
        rows = await reply.record_step(
            step, text, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            calls=[toolbox.resolve(call) for call in calls],
        )  # fmt: skip
        conversation.append(_asked(text, rows))
        results = await _run_calls(toolbox, reply, rows)
        if results is None:
            return used
        conversation += results
        step += 1


def _call(row: tool_calls.ToolCallRow) -> ToolCall:
    return ToolCall(row["call_id"], row["name"], row["arguments"])


def _result(row: tool_calls.ToolCallRow) -> ChatMessage:
    return ChatMessage("tool", row["result"] or "", tool_call_id=row["call_id"], is_error=bool(row["is_error"]))


def _asked(text: str, calls: list[tool_calls.ToolCallRow]) -> ChatMessage:
    """A model call that asked for tools, as the model is shown it again: its text and calls."""
    return ChatMessage("assistant", text, tool_calls=tuple(_call(row) for row in calls))


def _replayed(done: tool_calls.Progress, steps: int) -> list[ChatMessage]:
    """The first ``steps`` stored steps as the model saw them: each what it asked, then its
    calls' results, in order (every call of those steps has ended)."""
    messages: list[ChatMessage] = []
    for step in done.steps[:steps]:
        calls = done.calls.get(step["step"], [])
        messages += [_asked(step["text"], calls), *(_result(row) for row in calls)]
    return messages


async def _run_calls(
    toolbox: toolbox_.Toolbox, reply: replies.Reply, rows: list[tool_calls.ToolCallRow]
) -> list[ChatMessage] | None:
    """Run a step's calls that have not ended, at once; the results of all its calls, in
    order, for the model. None when some wait for the user's approval (the reply then waits,
    its run set aside; the calls that need no approval have run meanwhile).

    Whether a call waits is decided here, from its tool as the turn finds it now, not from
    what was stored when the model made it: a call can only skip the question by having
    been approved."""
    asking: list[tool_calls.ToolCallRow] = []
    runnable: list[tool_calls.ToolCallRow] = []
    for row in rows:
        if row["status"] in tool_calls.FINAL:
            continue
        (asking if toolbox.asks(row) else runnable).append(row)
    finished = {row["pk"]: row for row in rows}
    for row in await _all_or_none(_run_call(toolbox, reply, row) for row in runnable):
        finished[row["pk"]] = row
    if asking:
        await reply.wait_for_approval(asking)
        return None
    return [_result(finished[row["pk"]]) for row in rows]


async def _all_or_none(calls: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Like ``asyncio.gather``, but when one fails (the run was lost, the database went away)
    the others are cancelled and waited for before the error goes on: none keeps running,
    or writing, after its turn ended. (A ``TaskGroup`` would wrap the error in a group.)"""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _run_call(
    toolbox: toolbox_.Toolbox, reply: replies.Reply, row: tool_calls.ToolCallRow
) -> tool_calls.ToolCallRow:
    refusal = toolbox.refusal(row)
    if refusal is None and row["status"] == tool_calls.RUNNING and toolbox.changes_things(row):
        # It was running when its turn was cut off: it may have done what it does. Again could
        # do it twice; the model is told instead (a read-only call simply runs again).
        refusal = (
            f"{row['name']} was interrupted while it ran (the service restarted): whether it did what it "
            "does is unknown. Check before calling it again."
        )
    if refusal is not None:
        return await reply.call_finished(row, status=tool_calls.FAILED, result=refusal, is_error=True, duration_ms=None)
    started = await reply.call_started(row)
    if started is None:  # denied meanwhile: it stays as it is
        return row
    began = time.monotonic()
    tool = toolbox.find(row["name"])
    assert tool is not None  # refusal() answered for an unknown tool
    outcome = await toolbox.call(tool, row["arguments"])
    status = tool_calls.FAILED if outcome.is_error else tool_calls.COMPLETED
    duration = int((time.monotonic() - began) * 1000)
    return await reply.call_finished(
        started, status=status, result=outcome.text, is_error=outcome.is_error, duration_ms=duration
    )


async def _model_call(
    settings: Settings,
    model: Model,
    conversation: list[ChatMessage],
    toolbox: toolbox_.Toolbox,
    reply: replies.Reply,
    choice: ToolChoice,
) -> tuple[str, list[ToolCall], Usage]:
    """One call of the model: its text (streamed into the reply), the tools it called, its usage.

    Past ``AICHATS_MAX_TOOL_STEPS`` the tools are still offered (a conversation with tool
    calls in it needs them, for some providers) with ``choice`` "none": the turn ends with
    an answer, and calls the model makes anyway are ignored.
    """
    text = ""
    calls: list[ToolCall] = []
    usage = None
    stream = _stream_with_retries(settings, model, conversation, toolbox.specs, choice)
    async for item in metrics.timed_stream(model.name, stream):  # time to first token, tokens/s
        if isinstance(item, Usage):
            usage = item
        elif isinstance(item, ToolCall):
            if choice != "none":
                calls.append(item)
        else:
            text += item
            await reply.append(item)
    if usage is None:
        raise ModelError(f"{model.name} ended without reporting usage", transient=False)
    return text, calls, usage


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


async def _stream_with_retries(
    settings: Settings, model: Model, prompt: list[ChatMessage], tools: list[ToolSpec], choice: ToolChoice
) -> AsyncIterator[str | ToolCall | Usage]:
    """The model's stream; transient failures before the first token are retried with
    backoff until ``AICHATS_MODEL_TIMEOUT_SECONDS`` has passed, and silence longer than
    that ends the reply."""
    timeout = settings.model_timeout_seconds
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        started = False
        stream = model.stream(
            prompt, max_output_tokens=settings.max_output_tokens, tools=tools, tool_choice=choice if tools else "auto"
        ).__aiter__()
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
            aclose = getattr(stream, "aclose", None)  # a generator's; a plain iterator has none
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
