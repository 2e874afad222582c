"""A slow OpenAI-compatible model for benchmarks: real HTTP, the chat-completions protocol.

Usage (``bench/slow_model.py`` starts it)::

    .venv/bin/python bench/model_server.py --port 8100 [--delay 2] [--words 20]

``POST /v1/chat/completions`` waits ``--delay`` seconds (a remote model thinking: nothing,
not even the headers, is sent meanwhile), then answers as OpenAI does: with ``stream:
true``, ``chat.completion.chunk`` events (the role, then one per word of ``"You said:
<the last user message>"``, cut to ``--words`` words), a ``finish_reason`` of ``stop``, the
usage chunk when ``stream_options.include_usage`` asks for it, and ``data: [DONE]``;
without ``stream``, one ``chat.completion``. Usage counts whitespace-separated words. It
never calls tools (they may be offered). ``GET /v1/models`` lists the one model.

The tests have a scripted server of their own (``tests/support/openai_server.py``); a
benchmark does not import the tests, and needs only this: many requests at once, each
answered after the same delay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "slow"


def text_of(content: Any) -> str:
    """A message's content as text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def answer_to(messages: list[dict[str, Any]], words: int) -> str:
    user = next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return " ".join(f"You said: {user}".split()[:words])


def events(body: dict[str, Any], answer: str, prompt_tokens: int, number: int) -> Iterator[bytes]:
    """The stream's ``data:`` lines, as OpenAI sends them."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model", MODEL), "system_fingerprint": None}  # fmt: skip

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        data = {**head, "choices": [choice], **({"usage": None} if include_usage else {})}
        return f"data: {json.dumps(data)}\n\n".encode()

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    words = answer.split()
    for i, word in enumerate(words):
        yield chunk({"content": word if i == 0 else " " + word})
    yield chunk({}, "stop")
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                 "total_tokens": prompt_tokens + len(words)}  # fmt: skip
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def create_app(delay: float, words: int) -> Starlette:
    answered = 0

    async def completions(request: Request) -> Response:
        nonlocal answered
        body = await request.json()
        messages: list[dict[str, Any]] = body.get("messages") or []
        prompt_tokens = sum(len(text_of(m.get("content")).split()) for m in messages)
        await asyncio.sleep(delay)
        answered += 1
        answer = answer_to(messages, words)
        if body.get("stream"):
            return StreamingResponse(events(body, answer, prompt_tokens, answered), media_type="text/event-stream")
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(answer.split()),
                 "total_tokens": prompt_tokens + len(answer.split())}  # fmt: skip
        message = {"role": "assistant", "content": answer, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return JSONResponse({"id": f"chatcmpl-{answered}", "object": "chat.completion", "created": int(time.time()),
                             "model": body.get("model", MODEL), "choices": [choice], "usage": usage})  # fmt: skip

    async def models(_request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": ""}]}
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A slow OpenAI-compatible chat-completions server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds before each answer (default: %(default)s)")
    parser.add_argument("--words", type=int, default=20, help="longest answer, in words (default: %(default)s)")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.delay, args.words),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        backlog=4096,  # every request of a burst connects at once
        timeout_keep_alive=60,
    )


if __name__ == "__main__":
    main()
