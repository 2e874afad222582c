"""A user's MCP tool servers over HTTP (``/tool_servers``), and the tools an agent can use
(``/tools``), against a real MCP server.

Every call answers at once, so the tests use the app in this process, shared by the module on
a database of its own (``module_app_server``'s way), each test with users of its own. That
app allows private addresses, as the MCP servers are on loopback; the refusal of private
addresses is tested on the per-test app, which keeps the default.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema_rs
import orjson
import pytest
import sqlalchemy as sa

from aichats import crypto
from aichats.api.schemas import AvailableToolList, ToolServer, ToolServerList
from aichats.storage import database
from aichats.storage.schema import tool_servers
from tests.conftest import NO_AUTH_LIMIT
from tests.support.api import assert_error
from tests.support.mcp_server import TOOL_NAMES, McpProcess, command, garbage_server, serving_mcp
from tests.support.servers import AppServer, Server, free_port
from tests.support.waiting import wait_for

SECRET = "Bearer s3cret-token-7f3a9"


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpProcess]:
    with serving_mcp() as running:
        yield running


@pytest.fixture(scope="module")
def tools_app(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory, mcp_server: McpProcess
) -> Iterator[AppServer]:
    files = tmp_path_factory.mktemp("tools") / "files"
    with AppServer(
        new_database(),
        files,
        auth_failures_per_minute=int(NO_AUTH_LIMIT),
        tools_allow_private_urls=True,
        tool_timeout_seconds=5,
        tool_servers=[{"name": "ops", "url": mcp_server.url}],
    ) as app:
        yield app


@pytest.fixture
def server(tools_app: AppServer) -> Server:
    return tools_app


def register(api: httpx2.Client, url: str, name: str = "revenue", **body: Any) -> dict[str, Any]:
    response = api.post("/tool_servers", json={"name": name, "url": url, **body})
    assert response.status_code == 201, response.text
    return ToolServer.model_validate(response.json()).model_dump(mode="json")


_ROW = sa.select(tool_servers).where(tool_servers.c.id == sa.bindparam("id"))


def stored_row(database_url: str, server_id: str) -> dict[str, Any]:
    """The server's row as stored, every column."""

    async def run() -> dict[str, Any]:
        db = await database.connect(database_url, pool_size=1)
        try:
            row = await db.fetch_one(_ROW, {"id": server_id})
            assert row is not None
            return dict(row)
        finally:
            await db.close()

    return asyncio.run(run())


# ----------------------------------------------------------------------------- registering


def test_register_lists_the_tools_and_never_returns_the_headers(
    tools_app: AppServer, api: httpx2.Client, mcp_server: McpProcess
) -> None:
    response = api.post(
        "/tool_servers", json={"name": "revenue", "url": mcp_server.url, "headers": {"Authorization": SECRET}}
    )
    assert response.status_code == 201, response.text
    assert "s3cret" not in response.text
    created = ToolServer.model_validate(response.json())
    assert created.id.startswith("tsrv_") and created.name == "revenue" and created.url == mcp_server.url
    assert created.has_headers is True
    assert [tool.name for tool in created.tools] == TOOL_NAMES
    revenue = created.tools[0].model_dump()
    assert revenue == {
        "name": "weekly_revenue",
        "description": "Revenue of one ISO week (e.g. 2026-W49).",
        "read_only": True,
        "destructive": False,
    }
    assert created.tools[1].model_dump()["destructive"] is True
    assert created.created_at == created.updated_at == created.refreshed_at

    fetched = api.get(f"/tool_servers/{created.id}")
    assert fetched.status_code == 200 and "s3cret" not in fetched.text
    assert fetched.json() == response.json()
    listed = api.get("/tool_servers")
    assert "s3cret" not in listed.text and listed.json()["data"] == [response.json()]

    row = stored_row(tools_app.database_url, created.id)
    assert all("s3cret" not in str(value) for value in row.values())
    assert orjson.loads(crypto.unseal(tools_app.settings, row["headers"])) == {"Authorization": SECRET}
    assert [tool["name"] for tool in orjson.loads(row["tools"])] == TOOL_NAMES


def test_a_server_without_headers(api: httpx2.Client, mcp_server: McpProcess) -> None:
    assert register(api, mcp_server.url)["has_headers"] is False
    assert register(api, mcp_server.url, name="other", headers={})["has_headers"] is False
    assert register(api, mcp_server.url, name="third", headers=None)["has_headers"] is False


def test_names_are_unique_per_user(server: Server, api: httpx2.Client, mcp_server: McpProcess) -> None:
    register(api, mcp_server.url)
    response = api.post("/tool_servers", json={"name": "revenue", "url": mcp_server.url})
    assert_error(response, 409, "conflict", "already have a tool server named 'revenue'")
    assert len(api.get("/tool_servers").json()["data"]) == 1
    with server.client(server.account()) as other:
        register(other, mcp_server.url)  # another user's names are theirs
    for reserved in ("ops", "builtin", "fetch_url"):  # the operator's server, every built-in tool, one of them
        response = api.post("/tool_servers", json={"name": reserved, "url": mcp_server.url})
        assert_error(response, 409, "conflict", f"the name {reserved!r} is reserved")


BAD_BODIES = [
    {"name": "has space"},
    {"name": ""},
    {"name": "a" * 33},
    {"name": "a.b"},
    {"name": "weird\u00e9"},
    {"name": None},
    {"url": "ftp://example.com/mcp"},
    {"url": "not a url"},
    {"url": "http://" + "a" * 2100 + ".com/"},
    {"url": 5},
    {"headers": {"X-Count": 1}},
    {"headers": ["Authorization"]},
    {"headers": {"X-Evil": "a\r\nInjected: yes"}},
    {"headers": {"X-Evil": "line\nbreak"}},
    {"headers": {"X-Accent": "caf\u00e9"}},
    {"headers": {"Bad Name": "x"}},
    {"headers": {"": "x"}},
    {"headers": {"Host": "evil.example"}},
    {"headers": {"Content-Type": "text/plain"}},
    {"headers": {"Mcp-Session-Id": "x"}},
    {"headers": {"X-Big": "x" * 9000}},
    {"headers": {f"X-H{i}": "x" for i in range(21)}},
    {"headers": {"X-Token": "a", "x-token": "b"}},
    {"extra": "field"},
]


@pytest.mark.parametrize("change", BAD_BODIES, ids=lambda change: next(iter(change)))
def test_bad_input_is_refused_and_changes_nothing(
    api: httpx2.Client, mcp_server: McpProcess, change: dict[str, Any]
) -> None:
    body = {"name": "revenue", "url": mcp_server.url, **change}
    assert_error(api.post("/tool_servers", json=body), 422, "invalid_request")
    assert api.get("/tool_servers").json()["data"] == []


def test_missing_fields_are_refused(api: httpx2.Client, mcp_server: McpProcess) -> None:
    assert_error(api.post("/tool_servers", json={"url": mcp_server.url}), 422, "invalid_request", "name")
    assert_error(api.post("/tool_servers", json={"name": "revenue"}), 422, "invalid_request", "url")
    assert_error(api.post("/tool_servers", content=b"[1]"), 400, "bad_request")
    assert api.get("/tool_servers").json()["data"] == []


def test_a_server_that_cannot_be_listed_is_refused_with_what_failed(api: httpx2.Client) -> None:
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    assert_error(
        api.post("/tool_servers", json={"name": "down", "url": closed}),
        422,
        "invalid_request",
        f"no MCP session could be opened with the tool server down ({closed}): the connection failed",
    )
    with garbage_server() as garbage:
        response = api.post("/tool_servers", json={"name": "web", "url": garbage.url})
        assert_error(response, 422, "invalid_request", "Unexpected content type: text/html")
        assert "nothing was saved" in response.json()["error"]["message"]
    assert api.get("/tool_servers").json()["data"] == []


def test_private_addresses_are_refused_unless_the_operator_allows_them(
    app_server: AppServer, mcp_server: McpProcess
) -> None:
    """``app_server`` keeps the default settings."""
    with app_server.client(app_server.account()) as api:
        for url in (mcp_server.url, mcp_server.url.replace("127.0.0.1", "0x7f.1"), "http://169.254.169.254/"):
            response = api.post("/tool_servers", json={"name": "revenue", "url": url})
            assert_error(response, 422, "invalid_request", "AICHATS_TOOLS_ALLOW_PRIVATE_URLS=true")
        assert api.get("/tool_servers").json()["data"] == []


# ----------------------------------------------------------------------------- reading, refreshing, removing


def test_list_pages_newest_first(api: httpx2.Client, mcp_server: McpProcess) -> None:
    ids = [register(api, mcp_server.url, name=name)["id"] for name in ("a", "b", "c")]
    first = ToolServerList.model_validate(api.get("/tool_servers", params={"first": 2}).json())
    assert [s.id for s in first.data] == [ids[2], ids[1]]
    assert first.page_info.has_next_page and not first.page_info.has_previous_page
    rest = api.get("/tool_servers", params={"first": 2, "after": first.page_info.end_cursor}).json()
    assert [s["id"] for s in rest["data"]] == [ids[0]]
    assert rest["page_info"]["has_next_page"] is False and rest["page_info"]["has_previous_page"] is True
    assert_error(api.get("/tool_servers", params={"first": 0}), 422, "invalid_request")
    assert_error(api.get("/tool_servers", params={"after": "junk"}), 422, "invalid_request")


def test_another_users_server_is_not_found(server: Server, api: httpx2.Client, mcp_server: McpProcess) -> None:
    mine = register(api, mcp_server.url)["id"]
    with server.client(server.account()) as other:
        assert_error(other.get(f"/tool_servers/{mine}"), 404, "not_found", mine)
        assert_error(other.post(f"/tool_servers/{mine}/refresh"), 404, "not_found")
        assert_error(other.delete(f"/tool_servers/{mine}"), 404, "not_found")
        assert other.get("/tool_servers").json()["data"] == []
    assert api.get(f"/tool_servers/{mine}").status_code == 200
    assert_error(api.get("/tool_servers/tsrv_doesnotexist"), 404, "not_found")


def test_delete(api: httpx2.Client, mcp_server: McpProcess) -> None:
    server_id = register(api, mcp_server.url)["id"]
    deleted = api.delete(f"/tool_servers/{server_id}")
    assert deleted.status_code == 200 and deleted.json() is True
    assert_error(api.get(f"/tool_servers/{server_id}"), 404, "not_found")
    assert_error(api.delete(f"/tool_servers/{server_id}"), 404, "not_found")
    assert api.get("/tool_servers").json()["data"] == []
    register(api, mcp_server.url)  # the name is free again


def test_refresh_lists_the_tools_again_or_changes_nothing(api: httpx2.Client) -> None:
    port = free_port()
    with serving_mcp("--tools", "weekly_revenue", port=port) as first:
        created = register(api, first.url, headers={"Authorization": SECRET})
    assert [tool["name"] for tool in created["tools"]] == ["weekly_revenue"]
    refused = api.post(f"/tool_servers/{created['id']}/refresh")  # the server is down
    assert_error(refused, 422, "invalid_request", "nothing was changed")
    assert api.get(f"/tool_servers/{created['id']}").json() == created
    with serving_mcp(port=port):
        refreshed = api.post(f"/tool_servers/{created['id']}/refresh")
    assert refreshed.status_code == 200, refreshed.text
    body = ToolServer.model_validate(refreshed.json()).model_dump(mode="json")
    assert [tool["name"] for tool in body["tools"]] == TOOL_NAMES
    assert body["refreshed_at"] >= created["refreshed_at"] and body["created_at"] == created["created_at"]
    assert body["has_headers"] is True
    assert api.get(f"/tool_servers/{created['id']}").json() == body


def test_each_call_needs_its_scope(server: Server, api: httpx2.Client, mcp_server: McpProcess) -> None:
    server_id = register(api, mcp_server.url)["id"]
    with server.client(server.account(scopes="ai_chat:read")) as read_only:
        assert read_only.get("/tool_servers").status_code == 200
        assert read_only.get("/tools").status_code == 200
        body = {"name": "x", "url": mcp_server.url}
        assert_error(read_only.post("/tool_servers", json=body), 403, "forbidden", "ai_chat:create")
        assert_error(read_only.post(f"/tool_servers/{server_id}/refresh"), 403, "forbidden", "ai_chat:update")
        assert_error(read_only.delete(f"/tool_servers/{server_id}"), 403, "forbidden", "ai_chat:delete")
    with server.client(server.account(scopes="ai_chat:create")) as write_only:
        assert_error(write_only.get("/tool_servers"), 403, "forbidden", "ai_chat:read")
        assert_error(write_only.get("/tools"), 403, "forbidden", "ai_chat:read")
    with server.client() as anonymous:
        assert_error(anonymous.get("/tool_servers"), 401, "unauthorized")


# ----------------------------------------------------------------------------- the tools an agent can use


def test_a_server_process_lists_the_operators_servers_once(new_database: Callable[[], str], tmp_path: Path) -> None:
    """The API's tool list and the workers' turns share the operator's servers and their
    lists: a stdio server is started once by a process that serves both (it was started by
    each, one cache in the app and one in the workers)."""
    starts = tmp_path / "starts"
    stdio = command("--transport", "stdio")
    script = (
        f"import runpy, sys; open({str(starts)!r}, 'a').write('started\\n'); "
        f"sys.argv = {stdio[2:]!r}; runpy.run_module('tests.support.mcp_server', run_name='__main__')"
    )
    ops = {"name": "ops", "command": sys.executable, "args": ["-c", script]}
    with AppServer(
        new_database(), tmp_path / "files", workers=1, model="test:echo", tool_servers=[ops], tool_timeout_seconds=10
    ) as app:
        with app.client(app.account()) as api:
            listed = api.get("/tools")
            assert listed.status_code == 200, listed.text
            assert any(tool["name"].startswith("ops__") for tool in listed.json()["data"])
            chat = api.post("/ai_chats", json={"message_text": "hello"}).json()

            def answered() -> bool:
                replies = api.get(f"/ai_chats/{chat['id']}/messages").json()["data"]
                return any(m["role"] == "assistant" and m["status"] == "completed" for m in replies)

            wait_for(answered, 30, "the agent's reply")
    assert starts.read_text().splitlines() == ["started"]


def test_tools_lists_built_in_operator_and_own_tools(api: httpx2.Client, mcp_server: McpProcess) -> None:
    server_id = register(api, mcp_server.url)["id"]
    response = api.get("/tools")
    assert response.status_code == 200, response.text
    tools = {tool.name: tool.model_dump() for tool in AvailableToolList.model_validate(response.json()).data}
    assert tools["revenue__weekly_revenue"] == {
        "name": "revenue__weekly_revenue",
        "tool": "weekly_revenue",
        "description": "Revenue of one ISO week (e.g. 2026-W49).",
        "server": {"id": server_id, "name": "revenue"},
        "kind": "user",
        "read_only": True,
        "destructive": False,
        "needs_approval": False,
    }
    delete = tools["revenue__delete_record"]
    assert (delete["destructive"], delete["needs_approval"]) == (True, True)
    operator = tools["ops__weekly_revenue"]
    assert operator["server"] == {"id": None, "name": "ops"} and operator["kind"] == "operator"
    assert tools["current_time"]["kind"] == "builtin" and tools["current_time"]["server"] is None
    kinds = [tool["kind"] for tool in response.json()["data"]]
    assert kinds == sorted(kinds, key=["builtin", "operator", "user"].index)  # built in, operator's, own
    assert {name for name, tool in tools.items() if tool["kind"] == "user"} == {
        f"revenue__{name}" for name in TOOL_NAMES
    }


# ----------------------------------------------------------------------------- the document


def test_answers_are_as_documented(tools_app: AppServer, api: httpx2.Client, mcp_server: McpProcess) -> None:
    with httpx2.Client(base_url=tools_app.root, transport=tools_app.transport()) as plain:
        document = plain.get("/openapi.json").json()

    def assert_documented(method: str, path: str, response: httpx2.Response) -> None:
        responses = document["paths"][path][method]["responses"]
        ok = next(code for code in responses if code.startswith("2"))
        assert int(ok) == response.status_code, (method, path, response.text)
        schema = responses[ok]["content"]["application/json"]["schema"]
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})
        assert validator.is_valid(response.json()), (method, path, response.text)

    created = api.post("/tool_servers", json={"name": "revenue", "url": mcp_server.url, "headers": {"A": "b"}})
    assert_documented("post", "/tool_servers", created)
    server_id = created.json()["id"]
    assert_documented("get", "/tool_servers", api.get("/tool_servers"))
    assert_documented("get", "/tool_servers/{tool_server_id}", api.get(f"/tool_servers/{server_id}"))
    assert_documented("post", "/tool_servers/{tool_server_id}/refresh", api.post(f"/tool_servers/{server_id}/refresh"))
    assert_documented("get", "/tools", api.get("/tools"))
    assert_documented("delete", "/tool_servers/{tool_server_id}", api.delete(f"/tool_servers/{server_id}"))
    assert {"409", "422"} <= set(document["paths"]["/tool_servers"]["post"]["responses"])
    assert set(document["components"]["schemas"]["ToolServerInput"]["properties"]) == {"name", "url", "headers"}
