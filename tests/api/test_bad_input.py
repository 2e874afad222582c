"""Inputs that used to answer 500: NUL characters (issue 10, item 5) and out-of-range
integers in list cursors (item 7), on both databases.

Each answer must be a 4xx in the error envelope, and leave the user's data as it was.
None of these calls streams: the app runs in this process, shared by the module on a
database of its own (``module_app_server``), as a server process would be.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest

from tests.support.api import assert_error, create
from tests.support.servers import AppServer

NUL = "\u0000"
WEEKLY = {"prompt": "Weekly revenue analysis", "timezone": "America/New_York", "cron": "0 9 * * 1"}


@dataclass
class Seeded:
    api: httpx2.Client
    chat: str
    message: str


@pytest.fixture(scope="module")
def seeded(module_app_server: AppServer) -> Iterator[Seeded]:
    """One user with a chat, a schedule and a run: the state every bad input must leave alone."""
    with module_app_server.client(module_app_server.account()) as api:
        chat = create(api, title="Keep")["id"]
        assert api.put(f"/ai_chats/{chat}/schedule", json=WEEKLY).status_code == 200
        message = api.get(f"/ai_chats/{chat}/messages").json()["data"][0]["id"]
        yield Seeded(api, chat, message)


def snapshot(seeded: Seeded) -> list[object]:
    api, chat = seeded.api, seeded.chat
    paths = ["/ai_chats", f"/ai_chats/{chat}/messages", f"/ai_chats/{chat}/schedule", f"/ai_chats/{chat}/runs"]
    paths += ["/webhooks", "/notifications"]
    return [api.get(path).json() for path in paths]


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


# ----------------------------------------------------------------------------- item 5: NUL

POST_CHAT = {"message_text": "x"}
# (method, path, JSON body, field the 422 names). `{chat}` is the seeded chat.
NUL_IN_BODIES = [
    ("POST", "/ai_chats", {"message_text": f"a{NUL}b"}, "message_text"),
    ("POST", "/ai_chats", {**POST_CHAT, "title": f"t{NUL}"}, "title"),
    (
        "POST",
        "/ai_chats",
        {**POST_CHAT, "message_source": "suggestion", "suggestion_type": f"r{NUL}"},
        "suggestion_type",
    ),
    ("POST", "/ai_chats", {**POST_CHAT, "current_company_id": f"biz{NUL}"}, "current_company_id"),
    ("POST", "/ai_chats", {**POST_CHAT, "message_attachments": [{"id": f"file_{NUL}"}]}, "message_attachments.0.id"),
    ("POST", "/ai_chats", {**POST_CHAT, f"title{NUL}": "t"}, "field name"),
    ("POST", "/ai_chats/{chat}/messages", {"message_text": NUL}, "message_text"),
    (
        "POST",
        "/ai_chats/{chat}/messages",
        {**POST_CHAT, "message_source": "suggestion", "suggestion_type": f"r{NUL}"},
        "suggestion_type",
    ),
    ("PATCH", "/ai_chats/{chat}", {"title": f"t{NUL}"}, "title"),
    ("PUT", "/ai_chats/{chat}/schedule", {**WEEKLY, "prompt": f"p{NUL}"}, "prompt"),
    ("PUT", "/ai_chats/{chat}/schedule", {**WEEKLY, "timezone": f"UTC{NUL}"}, "timezone"),
    ("PUT", "/ai_chats/{chat}/schedule", {**WEEKLY, "cron": f"0 9 * * 1{NUL}"}, "cron"),
    ("POST", "/schedule_preview", {**WEEKLY, "prompt": f"p{NUL}"}, "prompt"),
    ("POST", "/webhooks", {"url": f"https://example.com/{NUL}", "events": ["notification.created"]}, "url"),
    ("POST", "/webhooks", {"url": "https://example.com/", "events": [f"notification.created{NUL}"]}, "events.0"),
    ("POST", "/notifications/read", {"ids": [f"n{NUL}"]}, "ids.0"),
]


@pytest.mark.parametrize(("method", "path", "body", "says"), NUL_IN_BODIES)
def test_nul_in_a_body_string_is_422_and_changes_nothing(
    seeded: Seeded, method: str, path: str, body: dict, says: str
) -> None:
    before = snapshot(seeded)
    response = seeded.api.request(method, path.format(chat=seeded.chat), json=body)
    assert_error(response, 422, "invalid_request", says)
    assert "NUL" in response.json()["error"]["message"]
    assert snapshot(seeded) == before


def test_nul_in_the_web_sign_in_is_422(module_app_server: AppServer) -> None:
    with module_app_server.client() as web:
        response = web.post(
            module_app_server.root + "/web/session", json={"api_key": f"ak_{NUL}"}, headers={"X-Aichats-Web": "1"}
        )
    assert_error(response, 422, "invalid_request", "api_key")


def test_an_escaped_backslash_before_u0000_is_not_a_nul(seeded: Seeded) -> None:
    """``"\\\\u0000"`` in JSON is the six characters ``\\u0000``, which are stored as sent."""
    response = seeded.api.post("/ai_chats", content=b'{"message_text": "x", "title": "a\\\\u0000b"}')
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "a\\u0000b"
    assert seeded.api.delete(f"/ai_chats/{response.json()['id']}").status_code == 200


# (path, query parameter) pairs: each list's filters and cursors, and the events' `after`.
NUL_IN_QUERIES = [
    ("/ai_chats", "query"),
    ("/ai_chats", "after"),
    ("/ai_chats", "before"),
    ("/ai_chats", "order"),
    ("/ai_chats", "agent_identifier"),
    ("/ai_chats", "only_active_crons"),
    ("/ai_chats", "first"),
    ("/ai_chats/{chat}/messages", "after"),
    ("/ai_chats/{chat}/messages", "before"),
    ("/ai_chats/{chat}/runs", "after"),
    ("/notifications", "after"),
    ("/ai_chats/{chat}/events", "after"),
]


@pytest.mark.parametrize(("path", "name"), NUL_IN_QUERIES)
def test_nul_in_a_query_parameter_is_422(seeded: Seeded, path: str, name: str) -> None:
    before = snapshot(seeded)
    response = seeded.api.get(path.format(chat=seeded.chat), params={name: f"a{NUL}b"})
    assert_error(response, 422, "invalid_request", name)
    assert snapshot(seeded) == before


def test_nul_in_the_upload_content_type_is_422(seeded: Seeded) -> None:
    # Written by hand: HTTP clients refuse to put a control character in a part's header.
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\x00x\r\n\r\n"
        b"hello\r\n"
        b"--b0undary--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    response = seeded.api.post("/files", content=body, headers=headers)
    assert_error(response, 422, "invalid_request", "content type")


# Every `{id}` in a path; `%00` is a NUL once the path is decoded.
BAD_CHAT = "aich_a%00b"
NUL_IN_PATHS = [
    ("GET", f"/ai_chats/{BAD_CHAT}", None),
    ("PATCH", f"/ai_chats/{BAD_CHAT}", {"title": "t"}),
    ("DELETE", f"/ai_chats/{BAD_CHAT}", None),
    ("GET", f"/ai_chats/{BAD_CHAT}/messages", None),
    ("POST", f"/ai_chats/{BAD_CHAT}/messages", {"message_text": "x"}),
    ("GET", f"/ai_chats/{BAD_CHAT}/events", None),
    ("POST", f"/ai_chats/{BAD_CHAT}/messages/{{message}}/retry", None),
    ("POST", "/ai_chats/{chat}/messages/aimsg_a%00b/retry", None),
    ("GET", f"/ai_chats/{BAD_CHAT}/schedule", None),
    ("PUT", f"/ai_chats/{BAD_CHAT}/schedule", WEEKLY),
    ("DELETE", f"/ai_chats/{BAD_CHAT}/schedule", None),
    ("POST", f"/ai_chats/{BAD_CHAT}/schedule/run", None),
    ("GET", f"/ai_chats/{BAD_CHAT}/runs", None),
    ("POST", f"/ai_chats/{BAD_CHAT}/read", None),
    ("GET", "/webhooks/wh_a%00b", None),
    ("DELETE", "/webhooks/wh_a%00b", None),
    ("GET", "/webhooks/wh_a%00b/deliveries", None),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_IN_PATHS)
def test_nul_in_a_path_id_is_404_and_changes_nothing(seeded: Seeded, method: str, path: str, body: dict | None) -> None:
    """An id with a NUL names nothing that can exist: 404, as any unknown id."""
    before = snapshot(seeded)
    response = seeded.api.request(method, path.format(chat=seeded.chat, message=seeded.message), json=body)
    assert_error(response, 404, "not_found")
    assert snapshot(seeded) == before


# ------------------------------------------------------------- item 7: integers in cursors

BIG = "9223372036854775808"  # 2**63: one past the largest 64-bit integer
# The five paginated lists: (path, its order, cursor code, integers in a cursor, pages with `before`)
LISTS = [
    ("/ai_chats", "created_at", "c", 1, True),
    ("/ai_chats", "last_activity_at", "a", 2, True),
    ("/ai_chats/{chat}/messages", None, "m", 1, True),
    ("/ai_chats/{chat}/runs", None, "r", 1, False),
    ("/notifications", None, "n", 1, False),
]
BAD_NUMBERS = [BIG, "-1", "-9223372036854775809", "9" * 100, "²", "\u0661", "+1", " 1", "1_0"]


@pytest.mark.parametrize("number", BAD_NUMBERS)
@pytest.mark.parametrize(("path", "order", "code", "parts", "backwards"), LISTS)
def test_out_of_range_cursor_integers_are_422(
    seeded: Seeded, path: str, order: str | None, code: str, parts: int, backwards: bool, number: str
) -> None:
    path = path.format(chat=seeded.chat)
    for position in range(parts):
        values = ["1"] * parts
        values[position] = number
        bad = cursor(":".join([code, *values]))
        for side in ("after", "before") if backwards else ("after",):
            response = seeded.api.get(path, params={side: bad, **({"order": order} if order else {})})
            assert_error(response, 422, "invalid_request", f"`{side}` is not a cursor")


@pytest.mark.parametrize(("path", "order", "code", "parts", "backwards"), LISTS)
def test_the_largest_cursor_integers_are_accepted(
    seeded: Seeded, path: str, order: str | None, code: str, parts: int, backwards: bool
) -> None:
    path = path.format(chat=seeded.chat)
    for number in ("0", str(2**63 - 1)):
        good = cursor(":".join([code, *[number] * parts]))
        for side in ("after", "before") if backwards else ("after",):
            response = seeded.api.get(path, params={side: good, **({"order": order} if order else {})})
            assert response.status_code == 200, response.text
