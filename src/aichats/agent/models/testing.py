"""A deterministic model for tests and benchmarks: no weights, no network.

``test:echo`` answers ``"You said: <last user message>"`` word by word; tokens are
whitespace-separated words, so usage is predictable. ``test:slow`` waits 20 ms per word;
``test:fail`` raises a non-transient error; ``test:flaky-N`` fails transiently on its
first N calls, then echoes. ``test:echo-N`` streams N words (benchmarks).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aichats.agent.models import ChatMessage, ModelError, Usage


class TestModel:
    context_window = 4096

    def __init__(self, variant: str) -> None:
        self.name = f"test:{variant}"
        self.variant = variant
        self.failures_left = int(variant.removeprefix("flaky-")) if variant.startswith("flaky-") else 0

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def stream(self, messages: list[ChatMessage], *, max_output_tokens: int) -> AsyncIterator[str | Usage]:
        if self.variant == "fail":
            raise ModelError("the test model was told to fail", transient=False)
        if self.failures_left:
            self.failures_left -= 1
            raise ModelError("the test model is flaky (try again)", transient=True)
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        if self.variant.startswith("echo-"):
            words = ["word"] * int(self.variant.removeprefix("echo-"))
        else:
            words = ["You", "said:", *last.split()]
        words = words[:max_output_tokens]
        delay = 0.02 if self.variant == "slow" else 0.0
        for i, word in enumerate(words):
            if delay:
                await asyncio.sleep(delay)
            yield word if i == 0 else " " + word
        yield Usage(sum(len(m.content.split()) for m in messages), len(words))

    async def close(self) -> None:
        return None
