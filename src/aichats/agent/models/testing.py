"""A deterministic model for tests and benchmarks: no weights, no network.

``test:echo`` answers ``"You said: <last user message>"`` word by word; tokens are
whitespace-separated words, so usage is predictable. ``test:slow`` waits 20 ms per word;
``test:fail`` raises a non-transient error; ``test:flaky-N`` fails transiently on its
first N calls, then echoes. ``test:echo-N`` streams N words (benchmarks). These ignore
the tools they are offered.

``test:tools`` calls tools, predictably, so that tests can drive a turn's loop from the
user's text:

- the last message is the user's and tools are offered: it calls each offered tool (in
  the order offered) whose name is a whole word of the text, with the text's first JSON
  object as arguments (``{}`` without one); with ``tool_choice="required"`` and no name
  in the text, the first tool with ``{}``; with ``"none"``, nothing. Ids are ``call_1``,
  ``call_2``... counted over the whole conversation, so they never repeat in it;
- the last messages are tool results: it answers ``"<name> said: <result>"`` for each
  (``"<name> failed: <result>"`` for an error), joined with ``"; "``;
- otherwise it echoes, as ``test:echo``.

It never calls a tool it was not offered. Usage: input is the words of every message
(tool results and calls' arguments included); output is the words it wrote plus one per
tool call. ``test:tools-slow`` is the same, waiting 20 ms per word and per call (a turn in
flight for a test to catch).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence

from aichats.agent.models import ChatMessage, ModelError, ToolCall, ToolChoice, ToolSpec, Usage

SLOW_SECONDS = 0.02  # per word (and per call) of the slow variants


def first_json_object(text: str) -> str | None:
    """The first ``{...}`` of ``text`` that is a JSON object, as written; None if there is none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return text[match.start() : end]
    return None


def mentions(text: str, name: str) -> bool:
    """Whether ``name`` is a whole word of ``text`` (tool names hold letters, digits, ``_`` and ``-``)."""
    return re.search(rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])", text) is not None


class TestModel:
    __test__ = False  # a model, not a test class for pytest to collect
    context_window = 4096

    def __init__(self, variant: str) -> None:
        self.name = f"test:{variant}"
        self.variant = variant
        self.failures_left = int(variant.removeprefix("flaky-")) if variant.startswith("flaky-") else 0

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_output_tokens: int,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
    ) -> AsyncIterator[str | ToolCall | Usage]:
        if self.variant == "fail":
            raise ModelError("the test model was told to fail", transient=False)
        if self.failures_left:
            self.failures_left -= 1
            raise ModelError("the test model is flaky (try again)", transient=True)
        delay = SLOW_SECONDS if self.variant in ("slow", "tools-slow") else 0.0
        calls: list[ToolCall] = []
        words: list[str]  # each with the whitespace before it: the deltas, joined, are the reply
        if self.variant in ("tools", "tools-slow"):
            calls = _calls(messages, tools, tool_choice)
            results = _results(messages)
            if calls:
                words = []
            elif results:
                words = re.findall(r"\s*\S+", results)
            else:
                words = _echo(messages)
        elif self.variant.startswith("echo-"):
            words = [" word" if i else "word" for i in range(int(self.variant.removeprefix("echo-")))]
        else:
            words = _echo(messages)
        words = words[:max_output_tokens]
        for word in words:
            if delay:
                await asyncio.sleep(delay)
            yield word
        for call in calls:
            if delay:
                await asyncio.sleep(delay)
            yield call
        read = sum(len(m.content.split()) + sum(len(c.arguments.split()) for c in m.tool_calls) for m in messages)
        yield Usage(read, len(words) + len(calls))

    async def close(self) -> None:
        return None


def _echo(messages: list[ChatMessage]) -> list[str]:
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    return ["You", *(" " + word for word in ["said:", *last.split()])]


def _calls(messages: list[ChatMessage], tools: Sequence[ToolSpec], tool_choice: ToolChoice) -> list[ToolCall]:
    """The calls ``test:tools`` makes: only when the user spoke last, tools are offered and allowed."""
    if not messages or messages[-1].role != "user" or not tools or tool_choice == "none":
        return []
    text = messages[-1].content
    called = [t for t in tools if mentions(text, t.name)]
    arguments = first_json_object(text) or "{}"
    if not called and tool_choice == "required":
        called, arguments = [tools[0]], "{}"
    made = sum(len(m.tool_calls) for m in messages)  # earlier calls of the conversation
    return [ToolCall(f"call_{made + n}", tool.name, arguments) for n, tool in enumerate(called, start=1)]


def _results(messages: list[ChatMessage]) -> str:
    """``"<name> said: <result>"`` for each tool result the conversation ends with, else ""."""
    trailing: list[ChatMessage] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        trailing.insert(0, message)
    if not trailing:
        return ""
    names: dict[str, str] = {}
    for message in messages:  # the latest call of each id wins
        names.update((call.id, call.name) for call in message.tool_calls)
    said = []
    for result in trailing:
        name = names.get(result.tool_call_id or "", "unknown")
        said.append(f"{name} {'failed' if result.is_error else 'said'}: {result.content}")
    return "; ".join(said)
