"""Security headers (issue 10, item 3): every API answer, errors and streams included, is
``nosniff`` and ``no-store``; the web app's page and files are ``nosniff`` and keep their
own caching."""

from __future__ import annotations

from pathlib import Path

import httpx2

from tests.support.accounts import make_account
from tests.support.api import assert_error, assert_private
from tests.support.databases import execute
from tests.support.servers import LiveServer, start_server, stop_server

WEB = {"X-Aichats-Web": "1"}


def test_every_api_answer_is_nosniff_and_no_store(live_server: LiveServer, api: httpx2.Client) -> None:
    created = api.post("/ai_chats", json={"message_text": "hi"})
    assert created.status_code == 201
    chat_id = created.json()["id"]
    answers = {
        200: api.get("/ai_chats"),
        201: created,
        400: api.post("/ai_chats", content=b"not json", headers={"Content-Type": "application/json"}),
        401: httpx2.get(live_server.api + "/ai_chats"),
        404: api.get("/nothing"),
        405: api.put("/ai_chats"),
        413: api.post("/ai_chats", content=b"x" * 2_000_000, headers={"Content-Type": "application/json"}),
        422: api.post("/ai_chats", json={}),
    }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        assert_private(response)
    with api.stream("GET", f"/ai_chats/{chat_id}/events") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert_private(stream)
    with api.stream("GET", "/notifications/events") as stream:
        assert stream.status_code == 200
        assert_private(stream)
    # The web app's session answers are one user's data too.
    assert_private(httpx2.get(live_server.root + "/web/session"))
    assert_private(httpx2.post(live_server.root + "/web/session", json={}, headers=WEB))


def test_the_page_and_static_files_are_nosniff_and_keep_their_caching(live_server: LiveServer) -> None:
    page = httpx2.get(live_server.root + "/")
    assert page.status_code == 200
    assert page.headers.get_list("x-content-type-options") == ["nosniff"]
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    script = httpx2.get(live_server.root + "/static/app.js")
    assert script.status_code == 200
    assert script.headers.get_list("x-content-type-options") == ["nosniff"]
    assert "etag" in script.headers and "last-modified" in script.headers  # still revalidated, not no-store
    assert "no-store" not in script.headers.get("cache-control", "")
    assert httpx2.get(live_server.root + "/static/nothing.js").headers["x-content-type-options"] == "nosniff"


def test_a_server_error_is_nosniff_and_no_store(database_url: str, tmp_path: Path) -> None:
    """A 500 is sent by Starlette's outermost middleware: the headers must wrap even that."""
    url = database_url  # the test's own: breaking it disturbs no other test
    server = start_server(url, tmp_path / "serve.log", {"AICHATS_WORKERS": "0"})
    try:
        account = make_account(url)
        # Break the database under the running server: listing chats now fails inside.
        execute(url, "ALTER TABLE ai_chats RENAME TO ai_chats_gone")
        response = httpx2.get(server.api + "/ai_chats", headers=account.headers)
        assert_error(response, 500, "internal_error")
        assert_private(response)
    finally:
        stop_server(server)
