"""The five calls, on both databases, held to the OpenAPI models.

None of these calls streams, so each test has the app in this process, on a database of
its own (``app_server``), instead of a server process.
"""

from __future__ import annotations

import time

import httpx2
import pytest

from aichats.api.ai_chats import chat_answers
from aichats.api.registry import OPERATIONS
from aichats.api.schemas import AiChat, AiChatList
from tests.support.accounts import Account
from tests.support.api import assert_error, create
from tests.support.databases import execute
from tests.support.servers import AppServer, Server


@pytest.fixture
def server(app_server: AppServer) -> Server:
    return app_server


def test_create_stores_chat_with_first_message(api: httpx2.Client, account: Account) -> None:
    chat = create(api, title="Weekly Revenue Analysis", current_company_id="biz_123")
    assert chat["id"].startswith("aich_") and len(chat["id"]) > 15
    assert chat["title"] == "Weekly Revenue Analysis"
    assert chat["message_count"] == 1
    assert chat["blended_token_usage"] == "0"
    assert chat["notification_preference"] == "all"
    assert chat["agent_identifier"] == "support"
    assert chat["user"] == {"id": account.user_id}
    assert chat["last_message_at"] == chat["created_at"] == chat["updated_at"]
    assert api.get(f"/ai_chats/{chat['id']}").json() == chat


def test_create_accepts_general_agent_and_account_id(api: httpx2.Client) -> None:
    chat = create(
        api,
        agent_identifier="general",
        current_account_id="biz_9",
        message_source="suggestion",
        suggestion_type="revenue",
    )
    assert chat["agent_identifier"] == "general"
    assert chat["title"] is None


def test_ids_are_unguessable(api: httpx2.Client) -> None:
    ids = {create(api)["id"] for _ in range(5)}
    assert len(ids) == 5
    suffixes = [i.removeprefix("aich_") for i in ids]
    assert all(len(s) >= 16 for s in suffixes)


def test_update_changes_only_sent_fields(api: httpx2.Client) -> None:
    chat = create(api, title="Before")
    time.sleep(0.005)
    response = api.patch(f"/ai_chats/{chat['id']}", json={"notification_preference": "none"})
    assert response.status_code == 200, response.text
    updated = AiChat.model_validate(response.json())
    assert updated.notification_preference.value == "none"
    assert updated.title == "Before"
    assert updated.updated_at > chat["updated_at"]
    assert updated.created_at == chat["created_at"]

    cleared = api.patch(f"/ai_chats/{chat['id']}", json={"title": None}).json()
    assert cleared["title"] is None and cleared["notification_preference"] == "none"
    renamed = api.patch(f"/ai_chats/{chat['id']}", json={"title": "  After  "}).json()
    assert renamed["title"] == "After"
    assert api.get(f"/ai_chats/{chat['id']}").json() == renamed


def test_empty_update_changes_nothing(api: httpx2.Client) -> None:
    chat = create(api)
    assert api.patch(f"/ai_chats/{chat['id']}", json={}).json() == chat


def test_delete_is_soft_and_hides_the_chat(server: Server, api: httpx2.Client) -> None:
    keep, gone = create(api), create(api)
    response = api.delete(f"/ai_chats/{gone['id']}")
    assert response.status_code == 200 and response.content == b"true"
    assert_error(api.get(f"/ai_chats/{gone['id']}"), 404, "not_found")
    assert_error(api.delete(f"/ai_chats/{gone['id']}"), 404, "not_found")
    assert_error(api.patch(f"/ai_chats/{gone['id']}", json={"title": "x"}), 404, "not_found")
    listed = [c["id"] for c in api.get("/ai_chats").json()["data"]]
    assert listed == [keep["id"]]


@pytest.mark.parametrize(
    "body, says",
    [
        ({}, "message_text"),
        ({"message_text": ""}, "message_text"),
        ({"message_text": "   "}, "blank"),
        ({"message_text": "x" * 32_001}, "message_text"),
        ({"message_text": "x", "title": "t" * 201}, "title"),
        ({"message_text": "x", "agent_identifier": "bogus"}, "agent_identifier"),
        ({"message_text": "x", "message_source": "email"}, "message_source"),
        ({"message_text": "x", "suggestion_type": "a"}, "suggestion_type"),
        ({"message_text": "x", "message_attachments": [{"id": "nope"}]}, "message_attachments"),
        ({"message_text": "x", "message_attachments": [{"id": f"file_{i}"} for i in range(11)]}, "message_attachments"),
        ({"message_text": "x", "current_company_id": "a", "current_account_id": "b"}, "same field"),
        ({"message_text": "x", "unknown": 1}, "unknown"),
        ({"message_text": 5}, "message_text"),
    ],
)
def test_invalid_create_is_422_and_writes_nothing(api: httpx2.Client, body: dict, says: str) -> None:
    assert_error(api.post("/ai_chats", json=body), 422, "invalid_request", says)
    assert api.get("/ai_chats").json()["data"] == []


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"", b'"text"'])
def test_malformed_body_is_400(api: httpx2.Client, content: bytes) -> None:
    response = api.post("/ai_chats", content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "bad_request")
    assert api.get("/ai_chats").json()["data"] == []


def test_body_too_large_is_413(api: httpx2.Client) -> None:
    response = api.post("/ai_chats", content=b'{"message_text": "' + b"x" * 1_100_000 + b'"}')
    assert_error(response, 413, "payload_too_large")
    assert api.get("/ai_chats").json()["data"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"notification_preference": "some"},
        {"notification_preference": None},
        {"title": ""},
        {"title": "t" * 201},
        {"id": "aich_x"},
    ],
)
def test_invalid_update_is_422_and_changes_nothing(api: httpx2.Client, body: dict) -> None:
    chat = create(api, title="Keep")
    assert_error(api.patch(f"/ai_chats/{chat['id']}", json=body), 422, "invalid_request")
    assert api.get(f"/ai_chats/{chat['id']}").json() == chat


def test_unknown_route_and_wrong_method_use_the_envelope(api: httpx2.Client) -> None:
    assert_error(api.get("/nothing"), 404, "not_found")
    assert_error(api.put("/ai_chats"), 405, "method_not_allowed")


class TestAuth:
    def test_missing_and_bad_keys_are_401(self, server: Server) -> None:
        with server.client() as anonymous:
            assert_error(anonymous.get("/ai_chats"), 401, "unauthorized")
            for header in ("Bearer nope", "Basic abc", "Bearer", "ak_x"):
                response = anonymous.get("/ai_chats", headers={"Authorization": header})
                assert_error(response, 401, "unauthorized")
                assert response.headers["www-authenticate"].startswith("Bearer")

    def test_each_call_needs_its_scope(self, server: Server, api: httpx2.Client) -> None:
        chat = create(api)
        reader = server.account(scopes="ai_chat:read")
        with server.client(reader) as read_only:
            assert read_only.get("/ai_chats").status_code == 200
            assert_error(read_only.post("/ai_chats", json={"message_text": "x"}), 403, "forbidden", "ai_chat:create")
            assert_error(read_only.patch(f"/ai_chats/{chat['id']}", json={}), 403, "forbidden", "ai_chat:update")
            assert_error(read_only.delete(f"/ai_chats/{chat['id']}"), 403, "forbidden", "ai_chat:delete")
        writer = server.account(scopes="ai_chat:create")
        with server.client(writer) as write_only:
            assert write_only.post("/ai_chats", json={"message_text": "x"}).status_code == 201
            assert_error(write_only.get("/ai_chats"), 403, "forbidden", "ai_chat:read")

    def test_users_are_isolated(self, server: Server, api: httpx2.Client) -> None:
        mine = create(api, title="private")
        with server.client(server.account()) as other:
            for response in (
                other.get(f"/ai_chats/{mine['id']}"),
                other.patch(f"/ai_chats/{mine['id']}", json={"title": "stolen"}),
                other.delete(f"/ai_chats/{mine['id']}"),
            ):
                assert_error(response, 404, "not_found")
            assert other.get("/ai_chats").json()["data"] == []
        assert api.get(f"/ai_chats/{mine['id']}").json() == mine

    def test_revoked_key_fails_at_once(self, server: Server, account: Account, api: httpx2.Client) -> None:
        assert api.get("/ai_chats").status_code == 200
        key_id = server.cli("keys", "list", "--user", account.user_id).stdout.split()[0]
        server.cli("keys", "revoke", key_id)
        assert_error(api.get("/ai_chats"), 401, "unauthorized")


class TestIdempotency:
    def test_retry_replays_and_creates_nothing(self, api: httpx2.Client) -> None:
        headers = {"Idempotency-Key": "order-1"}
        first = api.post("/ai_chats", json={"message_text": "hi"}, headers=headers)
        again = api.post("/ai_chats", json={"message_text": "hi"}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert len(api.get("/ai_chats").json()["data"]) == 1

    def test_same_key_other_body_is_refused(self, api: httpx2.Client) -> None:
        headers = {"Idempotency-Key": "order-2"}
        assert api.post("/ai_chats", json={"message_text": "hi"}, headers=headers).status_code == 201
        assert_error(
            api.post("/ai_chats", json={"message_text": "bye"}, headers=headers),
            422,
            "invalid_request",
            "Idempotency-Key",
        )
        assert len(api.get("/ai_chats").json()["data"]) == 1

    def test_keys_belong_to_their_holder(self, server: Server, api: httpx2.Client) -> None:
        headers = {"Idempotency-Key": "shared"}
        mine = api.post("/ai_chats", json={"message_text": "hi"}, headers=headers).json()
        with server.client(server.account()) as other:
            theirs = other.post("/ai_chats", json={"message_text": "hi"}, headers=headers).json()
        assert theirs["id"] != mine["id"]

    def test_rejected_request_stores_no_answer(self, api: httpx2.Client) -> None:
        headers = {"Idempotency-Key": "order-3"}
        assert api.post("/ai_chats", json={"message_text": ""}, headers=headers).status_code == 422
        assert api.post("/ai_chats", json={"message_text": "fixed"}, headers=headers).status_code == 201


def test_list_shape(api: httpx2.Client) -> None:
    create(api)
    AiChatList.model_validate(api.get("/ai_chats").json())


def test_title_search(api: httpx2.Client) -> None:
    revenue, percent, _untitled = create(api, title="Weekly Revenue"), create(api, title="50% off"), create(api)
    other = create(api, title="Revenue by region", agent_identifier="general")

    def titles(**params: object) -> list[str]:
        listed = AiChatList.model_validate(api.get("/ai_chats", params=params).json())
        return [c.id for c in listed.data]

    assert titles(query="REVENUE") == [other["id"], revenue["id"]]
    assert titles(query="%") == [percent["id"]]
    assert titles(query="revenue", agent_identifier="support") == [revenue["id"]]
    assert len(titles(query="")) == 4
    first = api.get("/ai_chats", params={"query": "revenue", "first": 1, "order": "last_activity_at"}).json()
    assert [c["id"] for c in first["data"]] == [other["id"]] and first["page_info"]["has_next_page"]
    rest = {"query": "revenue", "first": 1, "order": "last_activity_at", "after": first["page_info"]["end_cursor"]}
    page = api.get("/ai_chats", params=rest).json()
    assert [c["id"] for c in page["data"]] == [revenue["id"]] and not page["page_info"]["has_next_page"]
    assert_error(api.get("/ai_chats", params={"query": "x" * 201}), 422, "invalid_request", "query")


def test_answers_show_a_chat_changed_behind_the_servers_back(app_server: AppServer, api: httpx2.Client) -> None:
    """Retrieve and list keep chats' JSON by their rows (api.responses.JSONMemo): a row changed
    by anything (another process, a worker, a tool) is answered as it now is."""
    chat = create(api, title="Before")
    assert api.get(f"/ai_chats/{chat['id']}").json() == chat
    assert api.get("/ai_chats").json()["data"] == [chat]
    execute(app_server.database_url, "UPDATE ai_chats SET title = 'After', message_count = 7")
    changed = {**chat, "title": "After", "message_count": 7}
    assert api.get(f"/ai_chats/{chat['id']}").json() == changed
    assert api.get("/ai_chats").json()["data"] == [changed]
    execute(app_server.database_url, "UPDATE ai_chats SET blended_token_usage_micros = 1500000")
    assert api.get("/ai_chats").json()["data"] == [{**changed, "blended_token_usage": "1.5"}]
    assert api.get(f"/ai_chats/{chat['id']}").json() == {**changed, "blended_token_usage": "1.5"}


def test_openapi_and_health(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.get(server.root + "/healthz").json() == {"status": "ok"}
        document = anonymous.get(server.root + "/openapi.json").json()
    assert document["servers"] == [{"url": "/api/v1"}]
    operations = {
        op["operationId"]
        for path in document["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert operations == {op.operation_id for op in OPERATIONS}  # tests/api/test_openapi.py checks the rest
    assert {"AiChat", "ChatCreate", "ChatUpdate", "Error"} <= set(document["components"]["schemas"])
    assert {"SchedulePreviewInput", "SchedulePreview", "Badges"} <= set(document["components"]["schemas"])
    search = next(p for p in document["paths"]["/ai_chats"]["get"]["parameters"] if p["name"] == "query")
    assert search["schema"] == {"type": "string", "maxLength": 200}


def test_concurrent_retries_create_one_chat(server: Server, account: Account) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def post(_: int) -> httpx2.Response:
        with server.client(account) as client:
            return client.post("/ai_chats", json={"message_text": "once"}, headers={"Idempotency-Key": "race"})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    with server.client(account) as client:
        assert len(client.get("/ai_chats").json()["data"]) == 1


def test_a_page_read_from_kept_answers_is_the_page_read_whole(app_server: AppServer, api: httpx2.Client) -> None:
    """A list reads its page's (pk, row_version) first and answers from the kept answers when
    it has them all; else it reads the page whole. Both give the same page, its cursors
    included, in every order, filter and direction."""
    made = [create(api, title=f"Chat {n}", agent_identifier="support" if n % 2 else "general") for n in range(5)]
    scheduled = api.put(
        f"/ai_chats/{made[1]['id']}/schedule", json={"cron": "0 9 * * 1", "prompt": "Report", "timezone": "UTC"}
    )
    assert scheduled.status_code == 200, scheduled.text
    middle = api.get("/ai_chats", params={"first": 2}).json()["page_info"]["end_cursor"]
    shapes: list[dict[str, object]] = [
        {},
        {"first": 2},
        {"first": 2, "after": middle},
        {"last": 2, "before": middle},
        {"order": "last_activity_at", "first": 3},
        {"only_active_crons": "true"},
        {"agent_identifier": "general"},
        {"query": "chat 3"},
    ]
    for params in shapes:
        app_server.app.state.chat_answers = chat_answers()  # nothing kept: the page is read whole
        whole = api.get("/ai_chats", params=params).json()
        kept = api.get("/ai_chats", params=params).json()  # every chat of it kept now
        assert kept == whole and whole["data"], params
    execute(app_server.database_url, "UPDATE ai_chats SET title = 'Changed'")
    assert {chat["title"] for chat in api.get("/ai_chats").json()["data"]} == {"Changed"}
