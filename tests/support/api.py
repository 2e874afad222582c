"""Calls and checks that many API tests share: creating a chat, and the error envelope."""

from __future__ import annotations

from typing import Any

import httpx2

from aichats.api.schemas import AiChat, Error


def create(api: httpx2.Client, **body: object) -> dict[str, Any]:
    """A new chat (``message_text`` "Hello" unless given), held to the ``AiChat`` model."""
    response = api.post("/ai_chats", json={"message_text": "Hello", **body})
    assert response.status_code == 201, response.text
    return AiChat.model_validate(response.json()).model_dump(mode="json")


def assert_error(response: httpx2.Response, status: int, type_: str, says: str = "") -> None:
    """``response`` is the error envelope with ``status``, of ``type_``, its message containing ``says``."""
    assert response.status_code == status, response.text
    error = Error.model_validate(response.json()).error
    assert error.type == type_
    assert says in error.message


def assert_private(response: httpx2.Response) -> None:
    """Both headers, each exactly once (a handler's own Cache-Control is replaced, not doubled)."""
    assert response.headers.get_list("x-content-type-options") == ["nosniff"], response.headers
    assert response.headers.get_list("cache-control") == ["no-store"], response.headers
