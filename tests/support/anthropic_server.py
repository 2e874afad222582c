"""A scripted Anthropic Messages server: real HTTP on loopback, no mocks.

It speaks ``POST /v1/messages`` with ``stream: true`` as Anthropic streams it (server-sent
events): ``message_start`` (with the input tokens), a ``text`` block streamed word by word
(``text_delta``), a ``tool_use`` block per call (its id and name at
``content_block_start``, its input as ``input_json_delta`` fragments of a few characters,
then ``content_block_stop``), ``message_delta`` (``stop_reason`` ``tool_use`` or
``end_turn``, the output tokens), ``message_stop``. Every request body is recorded.

The script is the OpenAI double's (:mod:`tests.support.openai_server`): a list of
:class:`Reply`, a rule ``(body) -> Reply``, or by default :func:`answer_by_text`, which reads
an Anthropic request the same way (a user message of ``tool_result`` blocks is the results
the conversation ends with).

    with anthropic_server([Reply(calls=(ScriptedCall("current_time"),))]) as server:
        model = AnthropicModel("m", base_url=server.url, ...)   # server.url is the root
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from starlette.responses import JSONResponse, Response

from tests.support.openai_server import (
    Reply,
    Rule,
    ScriptedCall,
    ScriptedServer,
    Seen,
    answer_by_text,
    fragments,
    script_of,
    serving_protocol,
    words,
)

__all__ = ["Reply", "ScriptedCall", "ScriptedServer", "answer_by_text", "anthropic_server"]

# Anthropic's error types by status, as its API answers them.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               529: "overloaded_error"}  # fmt: skip


def _text_of(content: Any) -> str:
    """A message's (or a tool result's) content as text: a string, or its text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return ""


def _block_words(content: Any) -> int:
    if not isinstance(content, list):
        return words(_text_of(content))
    count = 0
    for block in content:
        if block.get("type") == "tool_use":
            count += words(json.dumps(block.get("input", {})))
        elif block.get("type") == "tool_result":
            count += words(_text_of(block.get("content")))
        else:
            count += words(block.get("text", ""))
    return count


def anthropic_seen(body: dict[str, Any]) -> Seen:
    messages: list[dict[str, Any]] = body.get("messages", [])
    choice = (body.get("tool_choice") or {}).get("type", "auto")
    offered = tuple(t["name"] for t in body.get("tools", []))
    last = messages[-1] if messages else {}
    content = last.get("content")
    results: tuple[str, ...] = ()
    user_text: str | None = None
    if last.get("role") == "user" and isinstance(content, list) and content:
        if all(block.get("type") == "tool_result" for block in content):
            results = tuple(_text_of(block.get("content")) for block in content)
        else:
            user_text = _text_of(content)
    elif last.get("role") == "user":
        user_text = _text_of(content)
    return Seen(
        tools=() if choice == "none" else offered,
        required=choice == "any",
        user_text=user_text,
        results=results,
        words=words(_text_of(body.get("system"))) + sum(_block_words(m.get("content")) for m in messages),
    )


def anthropic_error(reply: Reply) -> Response:
    kind = ERROR_TYPES.get(reply.status, "api_error")
    return JSONResponse({"type": "error", "error": {"type": kind, "message": reply.text}}, reply.status)


def anthropic_events(server: ScriptedServer, body: dict[str, Any], reply: Reply, seen: Seen) -> Iterator[bytes]:
    """The stream's events for ``reply``, as Anthropic sends them."""

    def event(data: dict[str, Any]) -> bytes:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

    input_tokens = seen.words if reply.input_tokens is None else reply.input_tokens
    output_tokens = words(reply.text) + len(reply.calls) if reply.output_tokens is None else reply.output_tokens
    message = {"id": f"msg_{len(server.requests)}", "type": "message", "role": "assistant",
               "model": body.get("model", ""), "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": input_tokens, "output_tokens": 1}}  # fmt: skip
    yield event({"type": "message_start", "message": message})
    yield event({"type": "ping"})
    index = 0
    if reply.text:
        yield event({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        for i, word in enumerate(reply.text.split()):
            delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
            yield event({"type": "content_block_delta", "index": index, "delta": delta})
        yield event({"type": "content_block_stop", "index": index})
        index += 1
    for call in reply.calls:
        block = {"type": "tool_use", "id": server.call_id(call, "toolu"), "name": call.name, "input": {}}
        yield event({"type": "content_block_start", "index": index, "content_block": block})
        for piece in ["", *fragments(call.arguments)]:  # Anthropic opens with an empty fragment
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield event({"type": "content_block_delta", "index": index, "delta": delta})
        yield event({"type": "content_block_stop", "index": index})
        index += 1
    stop_reason = "tool_use" if reply.calls else "end_turn"
    yield event({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                 "usage": {"output_tokens": output_tokens}})  # fmt: skip
    yield event({"type": "message_stop"})


@contextmanager
def anthropic_server(
    script: Sequence[Reply] | Rule | None = None,
    *,
    delay: float = 0.0,
    chunk_delay: float = 0.0,
    calls_per_reply: int = 1,
) -> Iterator[ScriptedServer]:
    """A scripted Anthropic Messages server for the ``with`` block; ``.url`` is its root
    (what ``ANTHROPIC_BASE_URL`` takes). The arguments are :func:`openai_server`'s."""
    state = ScriptedServer(script=script_of(script), delay=delay, chunk_delay=chunk_delay,
                           calls_per_reply=calls_per_reply)  # fmt: skip
    with serving_protocol(state, "/v1/messages", anthropic_seen, anthropic_error, anthropic_events) as root:
        state.url = root
        yield state
