"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

OpenAI itself, Ollama, vLLM, llama.cpp's server, LM Studio: settings choose the endpoint
(``AICHATS_OPENAI_BASE_URL``, ``AICHATS_OPENAI_API_KEY``, also read under the SDK's own names
``OPENAI_BASE_URL``, ``OPENAI_API_KEY``). Usage comes from the
provider's report: the streamed usage chunk when it sends one; servers that never do
get their output counted as one token per streamed chunk (which is how those servers
stream) and their prompt estimated, and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx2

from aichats.agent.models import ChatMessage, ModelError, Usage, status_error

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

log = logging.getLogger("aichats.models")


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    """The SDK's typed message for one of ours (one TypedDict per role)."""
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    return {"role": "assistant", "content": message.content}


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

    async def stream(self, messages: list[ChatMessage], *, max_output_tokens: int) -> AsyncIterator[str | Usage]:
        import openai

        usage: Usage | None = None
        chunks = 0
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[_message(m) for m in messages],
                max_tokens=max_output_tokens,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=self._extra_body,
            )
            async for chunk in response:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        chunks += 1
                        yield choice.delta.content
        except openai.APIStatusError as error:
            raise status_error(self.name, error.status_code, error.message) from error
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            raise ModelError(f"{self.name} is unreachable: {error}", transient=True) from error
        except httpx2.TransportError as error:  # the connection dropped mid-stream (the SDK does not wrap it)
            raise ModelError(f"{self.name} closed the connection mid-reply: {error!r}", transient=True) from error
        if usage is None:
            log.warning("%s streamed no usage report; counting chunks and estimating the prompt", self.name)
            usage = Usage(sum([await self.count_tokens(m.content) for m in messages]), chunks)
        yield usage

    async def close(self) -> None:
        await self._client.close()
