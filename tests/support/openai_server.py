"""A scripted OpenAI chat-completions server: real HTTP on loopback, no mocks.

It speaks ``POST /v1/chat/completions`` with ``stream: true`` as OpenAI streams it:
``chat.completion.chunk`` objects, one per word of text; each tool call first as its head
(index, id, type, name, empty arguments), then its arguments in fragments of a few
characters; a ``finish_reason`` of ``tool_calls`` (else ``stop``); then, when the request
asks for it (``stream_options.include_usage``), the usage chunk with empty ``choices``;
then ``data: [DONE]``. Every request body is recorded, so a test can assert what was sent.

What it answers is scripted, either way:

- a list of :class:`Reply`, answered in order (a request past the end gets a 500);
- a rule, ``(body) -> Reply``; by default :func:`answer_by_text`: a user's message that
  names offered tools (whole words) calls them, with the message's first JSON object as
  arguments; tool results are answered with a text quoting them; anything else is echoed.

``delay`` holds every answer back (a turn in flight, a provider too slow); ``chunk_delay``
paces the chunks; ``calls_per_reply`` repeats each call the default rule makes.

    with openai_server([Reply(calls=(ScriptedCall("current_time", '{"timezone": "UTC"}'),)),
                        Reply(text="It is noon.", input_tokens=30, output_tokens=4)]) as server:
        model = OpenAIModel("m", base_url=server.url, ...)   # server.url ends in /v1
        ...
        assert server.requests[1]["messages"][-1]["role"] == "tool"

The script's types and the server's machinery are shared with
:mod:`tests.support.anthropic_server`, which speaks Anthropic's Messages API the same way.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aichats.agent.models.testing import first_json_object, mentions
from tests.support.waiting import wait_for

FRAGMENT_CHARS = 4  # a call's arguments are streamed in pieces this long, as OpenAI and Anthropic do


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call the server makes: ``arguments`` is sent as written (invalid JSON too);
    without an ``id``, one is made (``call_<n>``, ``toolu_<n>``, counted per server)."""

    name: str
    arguments: str = "{}"
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """One scripted answer: text (streamed word by word), then tool calls.

    Usage defaults: input is the words of the request's messages, output the words of
    ``text`` plus one per call. ``delay`` (seconds before answering) overrides the server's.
    A ``status`` other than 200 answers the protocol's error body instead, ``text`` its message.
    OpenAI only: ``omit_ids`` sends calls without ids, ``whole_calls`` each call in one delta,
    ``usage=False`` no usage chunk even when asked (servers that never send one).
    """

    text: str = ""
    calls: tuple[ScriptedCall, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    delay: float | None = None
    status: int = 200
    omit_ids: bool = False
    whole_calls: bool = False
    usage: bool = True


@dataclass(frozen=True)
class Seen:
    """A request as the default rule reads it, whichever protocol it came in."""

    tools: tuple[str, ...]  # the tools it may call (none when its tool choice is "none")
    required: bool  # it must call one
    user_text: str | None  # the user's message, when the conversation ends with one
    results: tuple[str, ...]  # the tool results the conversation ends with
    words: int  # words of every message: the default input tokens


Rule = Callable[[dict[str, Any]], Reply]


def answer_by_text(seen: Seen, calls_per_reply: int = 1) -> Reply:
    """The default rule. Tool results: ``"Results: <r1>; <r2>"``. A user's message naming
    offered tools (whole words): a call to each (``calls_per_reply`` times), with the
    message's first JSON object as arguments (``{}`` without one); none named but a call
    required: the first tool. Otherwise ``"You said: <message>"``."""
    if seen.results:
        return Reply(text="Results: " + "; ".join(seen.results))
    text = seen.user_text or ""
    named = [name for name in seen.tools if mentions(text, name)]
    if not named and seen.required and seen.tools:
        named = [seen.tools[0]]
    if named:
        arguments = first_json_object(text) or "{}"
        return Reply(calls=tuple(ScriptedCall(name, arguments) for name in named for _ in range(calls_per_reply)))
    return Reply(text=f"You said: {text}")


def words(text: str) -> int:
    return len(text.split())


def fragments(text: str) -> list[str]:
    return [text[i : i + FRAGMENT_CHARS] for i in range(0, len(text), FRAGMENT_CHARS)]


@dataclass
class ScriptedServer:
    """A running scripted server: ``url`` is the base URL its SDK takes, ``requests`` every
    body received (in order of arrival)."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[Reply] | Rule | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    calls_per_reply: int = 1
    _ids: int = 0

    def reply_to(self, body: dict[str, Any], seen: Seen) -> Reply:
        """The scripted answer to ``body`` (recorded first)."""
        self.requests.append(body)
        if isinstance(self.script, list):
            if not self.script:
                return Reply(status=500, text=f"the script has no reply left for request {len(self.requests)}")
            return self.script.pop(0)
        if self.script is not None:
            return self.script(body)
        return answer_by_text(seen, self.calls_per_reply)

    def call_id(self, call: ScriptedCall, prefix: str) -> str:
        if call.id is not None:
            return call.id
        self._ids += 1
        return f"{prefix}_{self._ids}"

    async def wait(self, reply: Reply) -> None:
        seconds = self.delay if reply.delay is None else reply.delay
        if seconds:
            await asyncio.sleep(seconds)

    async def paced(self, events: Iterator[bytes]) -> AsyncIterator[bytes]:
        """The stream's events, ``chunk_delay`` apart."""
        for i, event in enumerate(events):
            if i and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield event


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """``app`` on uvicorn in a thread, on a loopback port bound here (no race for it);
    yields its root URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 15, "the scripted model server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def script_of(script: Sequence[Reply] | Rule | None) -> list[Reply] | Rule | None:
    return list(script) if isinstance(script, Sequence) else script


# ----------------------------------------------------------------------- OpenAI


def _text_of(content: Any) -> str:
    """A message's content as text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def openai_seen(body: dict[str, Any]) -> Seen:
    messages: list[dict[str, Any]] = body.get("messages", [])
    choice = body.get("tool_choice", "auto")
    offered = tuple(t["function"]["name"] for t in body.get("tools", []))
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, _text_of(message.get("content")))
    last = messages[-1] if messages else {}
    count = sum(
        words(_text_of(m.get("content"))) + sum(words(c["function"]["arguments"]) for c in m.get("tool_calls") or [])
        for m in messages
    )
    return Seen(
        tools=() if choice == "none" else offered,
        required=choice == "required",
        user_text=_text_of(last.get("content")) if last.get("role") == "user" else None,
        results=tuple(results),
        words=count,
    )


def openai_error(reply: Reply) -> Response:
    kind = "invalid_request_error" if reply.status < 500 else "server_error"
    return JSONResponse({"error": {"message": reply.text, "type": kind, "param": None, "code": None}}, reply.status)


def openai_events(server: ScriptedServer, body: dict[str, Any], reply: Reply, seen: Seen) -> Iterator[bytes]:
    """The stream's ``data:`` lines for ``reply``, as OpenAI sends them."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head = {"id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model", ""), "system_fingerprint": None}  # fmt: skip

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        data = {**head, "choices": [choice], **({"usage": None} if include_usage else {})}
        return f"data: {json.dumps(data)}\n\n".encode()

    yield chunk({"role": "assistant", "content": "" if reply.text else None, "refusal": None})
    for i, word in enumerate(reply.text.split()):
        yield chunk({"content": word if i == 0 else " " + word})
    for index, call in enumerate(reply.calls):
        call_head: dict[str, Any] = {"index": index, "type": "function"}
        if not reply.omit_ids:
            call_head["id"] = server.call_id(call, "call")
        if reply.whole_calls:
            yield chunk({"tool_calls": [{**call_head, "function": {"name": call.name, "arguments": call.arguments}}]})
            continue
        yield chunk({"tool_calls": [{**call_head, "function": {"name": call.name, "arguments": ""}}]})
        for piece in fragments(call.arguments):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if reply.calls else "stop")
    if include_usage and reply.usage:
        prompt = seen.words if reply.input_tokens is None else reply.input_tokens
        completion = words(reply.text) + len(reply.calls) if reply.output_tokens is None else reply.output_tokens
        details = {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                   "rejected_prediction_tokens": 0}  # fmt: skip
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": details}  # fmt: skip
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


@contextmanager
def openai_server(
    script: Sequence[Reply] | Rule | None = None,
    *,
    delay: float = 0.0,
    chunk_delay: float = 0.0,
    calls_per_reply: int = 1,
) -> Iterator[ScriptedServer]:
    """A scripted OpenAI-compatible server for the ``with`` block; ``.url`` ends in ``/v1``.

    ``script``: replies in order, or a rule ``(body) -> Reply``, or None for
    :func:`answer_by_text`. ``delay``: seconds before each answer; ``chunk_delay``: seconds
    between chunks; ``calls_per_reply``: how many times the default rule makes each call.
    """
    state = ScriptedServer(script=script_of(script), delay=delay, chunk_delay=chunk_delay,
                           calls_per_reply=calls_per_reply)  # fmt: skip
    with serving_protocol(state, "/v1/chat/completions", openai_seen, openai_error, openai_events) as root:
        state.url = root + "/v1"
        yield state


Seer = Callable[[dict[str, Any]], Seen]
Events = Callable[[ScriptedServer, dict[str, Any], Reply, Seen], Iterator[bytes]]


@contextmanager
def serving_protocol(
    state: ScriptedServer, path: str, seen_in: Seer, error: Callable[[Reply], Response], events: Events
) -> Iterator[str]:
    """Serve one protocol's streaming endpoint at ``path`` for ``state``'s script; yields the root URL.

    The protocol gives what differs: how a request's conversation is read (``seen_in``), its
    error body, and its stream of events."""

    async def endpoint(request: Request) -> Response:
        body = await request.json()
        seen = seen_in(body)
        reply = state.reply_to(body, seen)
        await state.wait(reply)
        if reply.status != 200:
            return error(reply)
        if not body.get("stream"):
            return error(Reply(status=400, text="this scripted server only streams"))
        return StreamingResponse(state.paced(events(state, body, reply, seen)), media_type="text/event-stream")

    with serve(Starlette(routes=[Route(path, endpoint, methods=["POST"])])) as root:
        yield root
