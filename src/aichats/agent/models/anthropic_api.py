"""Anthropic's Messages API, through the official ``anthropic`` SDK (settings
``AICHATS_ANTHROPIC_API_KEY``, ``AICHATS_ANTHROPIC_BASE_URL``, also read under the SDK's own
names ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``). Usage comes from the stream's
``message_start`` and ``message_delta`` events.

Tools: offered with their JSON Schema as ``input_schema``; ``tool_choice`` "required" is
Anthropic's ``any``. The model's calls are ``tool_use`` content blocks of the assistant's
message; their results go back as ``tool_result`` blocks of the next user message (the
results of one step in one message, as the API requires). A streamed ``tool_use`` block
gives its id and name when it starts and its input as JSON fragments
(``input_json_delta``); it is yielded whole when the block stops.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from aichats.agent.models import ChatMessage, ModelError, ToolCall, ToolChoice, ToolSpec, Usage, status_error

if TYPE_CHECKING:
    from anthropic.types import (
        MessageParam,
        TextBlockParam,
        ToolChoiceParam,
        ToolParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
    )

_CHOICES: dict[ToolChoice, ToolChoiceParam] = {
    "auto": {"type": "auto"},
    "required": {"type": "any"},
    "none": {"type": "none"},
}


def _input(arguments: str) -> dict[str, object]:
    """A call's arguments as the object Anthropic wants; ``{}`` for text that is not a JSON
    object (the model wrote it so: the tool's result already told it)."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _turns(messages: list[ChatMessage]) -> list[MessageParam]:
    """Our messages as Anthropic's turns (the system prompt goes apart): an assistant's
    calls become ``tool_use`` blocks, and consecutive tool results one user message of
    ``tool_result`` blocks."""
    turns: list[MessageParam] = []
    results: list[ToolResultBlockParam] = []
    for message in messages:
        if message.role == "tool":
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id or "",
                    "content": message.content,
                    "is_error": message.is_error,
                }
            )
            continue
        if results:
            turns.append({"role": "user", "content": results})
            results = []
        if message.role == "user":
            turns.append({"role": "user", "content": message.content})
        elif message.role == "assistant" and message.tool_calls:
            blocks: list[TextBlockParam | ToolUseBlockParam] = []
            if message.content:  # an empty text block is refused
                blocks.append({"type": "text", "text": message.content})
            blocks += [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call.arguments)}
                for call in message.tool_calls
            ]
            turns.append({"role": "assistant", "content": blocks})
        elif message.role == "assistant":
            turns.append({"role": "assistant", "content": message.content})
    if results:
        turns.append({"role": "user", "content": results})
    return turns


def _tools(tools: Sequence[ToolSpec], messages: list[ChatMessage]) -> list[ToolParam]:
    """The tools to declare. Anthropic refuses a conversation holding ``tool_use`` blocks
    without tools; a call made without tools (a turn's last) then declares the tools its
    history used, by name, and forbids calling them (``tool_choice`` none)."""
    if tools:
        return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]
    used = dict.fromkeys(call.name for m in messages for call in m.tool_calls)
    return [{"name": name, "input_schema": {"type": "object"}} for name in used]


class AnthropicModel:
    def __init__(
        self,
        model: str,
        *,
        timeout_seconds: float,
        context_window: int = 200_000,
        base_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        import anthropic

        self.name = f"anthropic:{model}"
        self.context_window = context_window
        self._model = model
        # Retries belong to the run loop (it knows the deadline), not to the SDK.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=0
        )

    async def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_output_tokens: int,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
    ) -> AsyncIterator[str | ToolCall | Usage]:
        import anthropic

        system = "\n\n".join(m.content for m in messages if m.role == "system")
        declared = _tools(tools, messages)
        choice = _CHOICES[tool_choice if tools else "none"]
        input_tokens = output_tokens = 0
        calls: dict[int, tuple[str, str, list[str]]] = {}  # by block index: id, name, input fragments
        try:
            stream = await self._client.messages.create(
                model=self._model,
                system=system or anthropic.omit,
                messages=_turns(messages),
                max_tokens=max_output_tokens,
                tools=declared or anthropic.omit,
                tool_choice=choice if declared else anthropic.omit,
                stream=True,
            )
            async for event in stream:
                if event.type == "message_start":
                    input_tokens = event.message.usage.input_tokens
                    output_tokens = event.message.usage.output_tokens
                elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                    calls[event.index] = (event.content_block.id, event.content_block.name, [])
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield event.delta.text
                elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    if event.index in calls:
                        calls[event.index][2].append(event.delta.partial_json)
                elif event.type == "content_block_stop" and event.index in calls:
                    id_, name, fragments = calls.pop(event.index)
                    yield ToolCall(id_, name, "".join(fragments) or "{}")
                elif event.type == "message_delta":
                    output_tokens = event.usage.output_tokens
        except anthropic.APIStatusError as error:
            raise status_error(self.name, error.status_code, error.message) from error
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as error:
            raise ModelError(f"{self.name} is unreachable: {error}", transient=True) from error
        yield Usage(input_tokens, output_tokens)

    async def close(self) -> None:
        await self._client.close()
