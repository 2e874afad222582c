"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

OpenAI itself, Ollama, vLLM, llama.cpp's server, LM Studio: settings choose the endpoint
(``AICHATS_OPENAI_BASE_URL``, ``AICHATS_OPENAI_API_KEY``, also read under the SDK's own names
``OPENAI_BASE_URL``, ``OPENAI_API_KEY``). Usage comes from the
provider's report: the streamed usage chunk when it sends one; servers that never do
get their output counted as one token per streamed chunk (which is how those servers
stream) and their prompt estimated, and the log says so.

Tools are offered as ``function`` tools, with ``tool_choice``; both are left out of a
request without tools (several local servers refuse an empty list). A streamed tool call
arrives in pieces keyed by its ``index``: its id and name in the first piece, its
arguments in fragments after. Servers differ: some send a whole call in one piece, some
send no id (one is made up then). Each call is yielded whole, once the choice finishes.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2

from aichats.agent.models import ChatMessage, ModelError, ToolCall, ToolChoice, ToolSpec, Usage, status_error

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolUnionParam

log = logging.getLogger("aichats.models")


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    """The SDK's typed message for one of ours (one TypedDict per role)."""
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    if message.role == "tool":
        # The protocol has no error flag for a tool's result: the model reads it in the text.
        content = f"Error: {message.content}" if message.is_error else message.content
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": content}
    if message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,  # "" beside tool calls is refused by some servers
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in message.tool_calls
            ],
        }
    return {"role": "assistant", "content": message.content}


def _tool(spec: ToolSpec) -> ChatCompletionToolUnionParam:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    }


@dataclass
class _PendingCall:
    """A streamed tool call being put together from its pieces."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def finish(self) -> ToolCall:
        # No id from the server: one of our own, made once per call, so that its result can name it.
        return ToolCall(self.id or f"call_{secrets.token_hex(12)}", self.name, "".join(self.arguments))


class OpenAIModel:
    def __init__(
        self,
        model: str,
        *,
        timeout_seconds: float,
        context_window: int = 8192,
        base_url: str | None = None,
        api_key: str | None = None,
        extra_body: dict[str, Any] | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        import openai

        self.name = f"openai:{model}"
        self.context_window = context_window
        self._model = model
        self._extra_body = extra_body
        # Retries belong to the run loop (it knows the deadline), not to the SDK.
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",  # local servers take any key; the SDK refuses none
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
            http_client=http_client,
        )

    async def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1  # no local tokenizer: a conservative estimate for trimming history

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_output_tokens: int,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
    ) -> AsyncIterator[str | ToolCall | Usage]:
        import openai

        usage: Usage | None = None
        chunks = 0
        pending: dict[int, _PendingCall] = {}  # by the call's index in the choice
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[_message(m) for m in messages],
                max_tokens=max_output_tokens,
                stream=True,
                stream_options={"include_usage": True},
                tools=[_tool(t) for t in tools] if tools else openai.omit,
                tool_choice=tool_choice if tools else openai.omit,
                extra_body=self._extra_body,
            )
            async for chunk in response:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta and delta.content:
                        chunks += 1
                        yield delta.content
                    if delta and delta.tool_calls:
                        chunks += 1
                        for piece in delta.tool_calls:
                            call = pending.setdefault(piece.index, _PendingCall())
                            call.id = piece.id or call.id
                            if piece.function is not None:
                                call.name = piece.function.name or call.name
                                call.arguments.append(piece.function.arguments or "")
                    if choice.finish_reason is not None:
                        for index in sorted(pending):
                            yield pending[index].finish()
                        pending.clear()
            for index in sorted(pending):  # a server that ended the stream without a finish reason
                yield pending[index].finish()
        except openai.APIStatusError as error:
            raise status_error(self.name, error.status_code, error.message) from error
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            raise ModelError(f"{self.name} is unreachable: {error}", transient=True) from error
        except httpx2.TransportError as error:  # the connection dropped mid-stream (the SDK does not wrap it)
            raise ModelError(f"{self.name} closed the connection mid-reply: {error!r}", transient=True) from error
        if usage is None:
            log.warning("%s streamed no usage report; counting chunks and estimating the prompt", self.name)
            usage = Usage(await self._estimate_prompt(messages, tools), chunks)
        yield usage

    async def _estimate_prompt(self, messages: list[ChatMessage], tools: Sequence[ToolSpec]) -> int:
        """The prompt's tokens, estimated: every message's text, its calls' arguments, the tools offered."""
        texts = [m.content for m in messages]
        texts += [call.name + call.arguments for m in messages for call in m.tool_calls]
        texts += [json.dumps(_tool(t)) for t in tools]
        return sum([await self.count_tokens(text) for text in texts])

    async def close(self) -> None:
        await self._client.close()
