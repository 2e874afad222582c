"""One small interface that every model provider implements.

A model streams a reply to a list of chat messages: text deltas as they are
generated, the tools it calls (each whole, once its arguments are complete), then
exactly one :class:`Usage` taken from the provider's own report (or, for the local
model, counted with its tokenizer). Providers raise :class:`ModelError`, saying whether
trying again may help (``transient``), so that the run loop owns retries.

Tools: the turn offers :class:`ToolSpec` s; a model that calls some yields a
:class:`ToolCall` for each. The turn runs them and calls the model again with the
conversation extended by an assistant message carrying those calls and one ``tool``
message per call with its result (:mod:`aichats.runs.turn`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from aichats.config import Settings

Role = Literal["system", "user", "assistant", "tool"]
# "auto": the model chooses; "required": it must call a tool; "none": it must not.
ToolChoice = Literal["auto", "required", "none"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the model called: the provider's id for the call, the tool's name as it was
    offered, and the arguments as the model wrote them (JSON text, not parsed here: a model
    may write invalid JSON, and the tool's answer then says so)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model is told of it: a name (``^[a-zA-Z0-9_-]{1,64}$``, what every
    provider accepts), what it does, and the JSON Schema (an object) of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation a model is sent.

    An ``assistant`` message may carry the ``tool_calls`` it made (its ``content`` is then
    what it wrote before them, often empty); a ``tool`` message is the result of the call
    ``tool_call_id``, ``is_error`` when the tool failed (the model is told, and answers anyway).
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False


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

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_output_tokens: int,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
    ) -> AsyncIterator[str | ToolCall | Usage]:
        """Yield text deltas and whole :class:`ToolCall` s (only of ``tools``), then one :class:`Usage`."""
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
