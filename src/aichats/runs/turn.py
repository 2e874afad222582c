"""One agent turn: a claimed run's reply, from its model's stream into the chat.

The reply's writes are :mod:`aichats.services.replies`'; this module is the agent's side:
which model, what prompt, the stream with its retries and its silence limit. A turn runs
as a child task of its worker (:mod:`aichats.runs.worker`), which cancels it when the
run's lease is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread

from aichats.agent import context
from aichats.agent.models import Model, ModelError, Usage, load_model, parse_spec
from aichats.config import Settings
from aichats.services import chats, replies
from aichats.services.replies import LostRun
from aichats.services.runs import Claim
from aichats.storage.database import Database

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


async def run_turn(db: Database, settings: Settings, models: Models, run: Claim) -> None:
    """Write the run's reply: started, streamed, then completed or failed.

    A model's failure, or any other exception (a bug, a broken file), fails this reply,
    not the worker. :class:`LostRun` and cancellation (the lease was lost) pass through:
    a lost run writes nothing more.
    """
    chat = await chats.chat_of_turn(db, run.chat_pk)
    assert chat is not None
    if chat["deleted_at"] is not None or run.user_message_pk is None:
        await replies.cancel(db, run, "the chat was deleted")
        return
    model_name = settings.model_for(chat["agent_identifier"])
    reply = await replies.start(db, run, chat, model=model_name, schedule_max_failures=settings.schedule_max_failures)
    try:
        if run.attempt > settings.max_run_attempts:
            raise ModelError(f"the reply was interrupted {run.attempt - 1} times", transient=False)
        model = await models.get(model_name)
        prompt = await context.build(db, settings, model, chat, reply.message["pk"])
        usage = None
        async for item in _stream_with_retries(settings, model, prompt):
            if isinstance(item, Usage):
                usage = item
            else:
                await reply.append(item)
        if usage is None:
            raise ModelError(f"{model.name} ended without reporting usage", transient=False)
    except ModelError as error:
        await reply.fail(str(error))
        return
    except LostRun:
        raise
    except Exception as error:
        log.exception("run %s failed unexpectedly", run.id)
        await reply.fail(f"internal error: {type(error).__name__}")
        return
    blended = settings.blended_micros(model_name, usage.input_tokens, usage.output_tokens)
    await reply.complete(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, blended_tokens_micros=blended
    )


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


async def _stream_with_retries(settings: Settings, model: Model, prompt: list[Any]) -> AsyncIterator[str | Usage]:
    """The model's stream; transient failures before the first token are retried with
    backoff until ``AICHATS_MODEL_TIMEOUT_SECONDS`` has passed, and silence longer than
    that ends the reply."""
    timeout = settings.model_timeout_seconds
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        started = False
        stream = model.stream(prompt, max_output_tokens=settings.max_output_tokens).__aiter__()
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
