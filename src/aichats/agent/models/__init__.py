"""One small interface that every model provider implements.

A model streams a reply to a list of chat messages: text deltas as they are
generated, then exactly one :class:`Usage` taken from the provider's own report (or,
for the local model, counted with its tokenizer). Providers raise :class:`ModelError`,
saying whether trying again may help (``transient``), so that the run loop owns retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from aichats.config import Settings

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int


class ModelError(Exception):
    """A provider failed; ``transient`` errors (timeouts, 429, 5xx, refused connections) may pass."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def status_error(name: str, status: int, message: str) -> ModelError:
    """A provider's HTTP error: 408, 409, 429 and 5xx may pass, the rest will not."""
    transient = status in (408, 409, 429) or status >= 500
    return ModelError(f"{name} answered {status}: {message}", transient=transient)


class Model(Protocol):
    """A chat model. ``name`` is ``provider:model``, as configured and as recorded on messages."""

    name: str
    context_window: int

    async def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in a prompt (exact where the provider's tokenizer is local)."""
        ...

    def stream(self, messages: list[ChatMessage], *, max_output_tokens: int) -> AsyncIterator[str | Usage]:
        """Yield text deltas, then one :class:`Usage`."""
        ...

    async def close(self) -> None: ...


def parse_spec(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` -> ``("openai", "gpt-4o-mini")``."""
    provider, sep, model = spec.partition(":")
    if not sep or not provider or not model:
        raise ValueError(f"a model is named 'provider:model', got {spec!r}")
    return provider, model


def load_model(spec: str, settings: Settings) -> Model:
    """Build the model that ``spec`` names (providers import their SDKs only when used).

    Call it on the event loop: a local model starts its engine process at once."""
    provider, model = parse_spec(spec)
    timeout_seconds = settings.model_timeout_seconds
    if provider == "test":
        from aichats.agent.models.testing import TestModel

        return TestModel(model)
    if provider == "local":
        from aichats.agent.models.local import LocalModel

        return LocalModel(model, settings)
    if provider == "openai":
        from aichats.agent.models.openai_compatible import OpenAIModel

        key = settings.openai_api_key
        return OpenAIModel(
            model,
            timeout_seconds=timeout_seconds,
            context_window=settings.openai_context_window,
            base_url=settings.openai_base_url or None,
            api_key=key.get_secret_value() if key is not None else None,
        )
    if provider == "anthropic":
        from aichats.agent.models.anthropic_api import AnthropicModel

        key = settings.anthropic_api_key
        return AnthropicModel(
            model,
            timeout_seconds=timeout_seconds,
            context_window=settings.anthropic_context_window,
            base_url=settings.anthropic_base_url or None,
            api_key=key.get_secret_value() if key is not None else None,
        )
    raise ValueError(f"unknown model provider {provider!r} (known: local, openai, anthropic, test)")
