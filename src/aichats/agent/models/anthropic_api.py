"""Anthropic's Messages API, through the official ``anthropic`` SDK (settings
``AICHATS_ANTHROPIC_API_KEY``, ``AICHATS_ANTHROPIC_BASE_URL``, also read under the SDK's own
names ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``). Usage comes from the stream's
``message_start`` and ``message_delta`` events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aichats.agent.models import ChatMessage, ModelError, Usage, status_error

if TYPE_CHECKING:
    from anthropic.types import MessageParam


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

    async def stream(self, messages: list[ChatMessage], *, max_output_tokens: int) -> AsyncIterator[str | Usage]:
        import anthropic

        system = "\n\n".join(m.content for m in messages if m.role == "system")
        turns: list[MessageParam] = [
            {"role": "user", "content": m.content} if m.role == "user" else {"role": "assistant", "content": m.content}
            for m in messages
            if m.role != "system"
        ]
        input_tokens = output_tokens = 0
        try:
            stream = await self._client.messages.create(
                model=self._model,
                system=system or anthropic.omit,
                messages=turns,
                max_tokens=max_output_tokens,
                stream=True,
            )
            async for event in stream:
                if event.type == "message_start":
                    input_tokens = event.message.usage.input_tokens
                    output_tokens = event.message.usage.output_tokens
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield event.delta.text
                elif event.type == "message_delta":
                    output_tokens = event.usage.output_tokens
        except anthropic.APIStatusError as error:
            raise status_error(self.name, error.status_code, error.message) from error
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as error:
            raise ModelError(f"{self.name} is unreachable: {error}", transient=True) from error
        yield Usage(input_tokens, output_tokens)

    async def close(self) -> None:
        await self._client.close()
