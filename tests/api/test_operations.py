"""The routes come from the operations' declarations (``aichats.api.registry``): every
declared operation answers at its path, and a path's route carries all its methods."""

from __future__ import annotations

import re

import httpx2
import pytest

from aichats.api.operations import Operation
from aichats.api.registry import OPERATIONS
from tests.conftest import LiveServer
from tests.support.api import assert_error, create

_IDS = re.compile(r"\{\w+\}")
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _methods_by_path() -> dict[str, set[str]]:
    paths: dict[str, set[str]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, set()).add(op.method)
    return paths


def test_a_wrong_method_lists_every_method_of_its_path(api: httpx2.Client) -> None:
    """One route per path: a 405 names all the path's methods, in order (it named one before)."""
    response = api.put("/ai_chats")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET, HEAD, POST"
    for path, methods in _methods_by_path().items():
        wrong = sorted(_METHODS - methods)[0]
        response = api.request(wrong, _IDS.sub("x_1", path))
        assert_error(response, 405, "method_not_allowed")
        allowed = methods | ({"HEAD"} if "GET" in methods else set())
        assert response.headers["Allow"] == ", ".join(sorted(allowed)), path


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.operation_id)
def test_every_declared_operation_is_routed_and_asks_for_a_key(live_server: LiveServer, op: Operation) -> None:
    response = httpx2.request(op.method, live_server.api + _IDS.sub("x_1", op.path))
    assert_error(response, 401, "unauthorized")


def test_head_answers_as_get(api: httpx2.Client) -> None:
    chat = create(api)
    response = api.head(f"/ai_chats/{chat['id']}")
    assert response.status_code == 200 and response.content == b""


def test_the_body_is_checked_before_the_chat_is_looked_up(api: httpx2.Client) -> None:
    """Every operation's body is validated before its handler runs: a bad schedule for a chat
    that does not exist is a 422, as a bad message for one already was (it used to be a 404)."""
    assert_error(api.put("/ai_chats/aich_nope/schedule", json={"prompt": "p"}), 422, "invalid_request")
    assert_error(api.post("/ai_chats/aich_nope/messages", json={}), 422, "invalid_request")
    weekly = {"prompt": "p", "timezone": "UTC", "cron": "0 9 * * 1"}
    assert_error(api.put("/ai_chats/aich_nope/schedule", json=weekly), 404, "not_found")
