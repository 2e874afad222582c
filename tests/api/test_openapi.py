"""``/openapi.json`` says what the server does: the same document for every request,
and the answers, errors and input rules the handlers actually have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import jsonschema_rs
import pytest

from aichats.api.registry import OPERATIONS
from tests.conftest import LiveServer, start_server, stop_server

# operation id: (method, path) of every operation with a JSON body, all read through the capped reader
_BODY_OPERATIONS = {op.operation_id: (op.method.lower(), op.path) for op in OPERATIONS if op.body is not None}


def _document(live_server: LiveServer, **headers: str) -> dict[str, Any]:
    response = httpx2.get(live_server.root + "/openapi.json", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return document["paths"][path][method]


def _ok_schema(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    responses = _operation(document, method, path)["responses"]
    ok = next(code for code in responses if code.startswith("2"))
    return responses[ok]["content"]["application/json"]["schema"]


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    """A validator of ``schema`` whose ``$ref`` s resolve inside the document."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def test_servers_do_not_repeat_the_host_header(live_server: LiveServer) -> None:
    response = httpx2.get(
        live_server.root + "/openapi.json", headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    )
    assert response.status_code == 200
    assert "evil.example" not in response.text
    assert response.json()["servers"] == [{"url": "/api/v1"}]
    assert _document(live_server) == response.json()


def _assert_documented(document: dict[str, Any], method: str, path: str, response: httpx2.Response) -> None:
    schema = _ok_schema(document, method, path)
    assert schema != {"type": "object"}, (method, path)  # a shape, not just "some object"
    assert _validator(document, schema).is_valid(response.json()), (method, path, response.text)


def test_webhook_answers_are_documented(live_server: LiveServer, api: httpx2.Client) -> None:
    """``DELETE`` answers ``true`` (as deleting a chat does); the others, the shapes documented."""
    document = _document(live_server)
    created = api.post("/webhooks", json={"url": "https://93.184.215.14/hook", "events": ["notification.created"]})
    assert created.status_code == 201, created.text
    _assert_documented(document, "post", "/webhooks", created)
    webhook = created.json()["id"]
    _assert_documented(document, "get", "/webhooks", api.get("/webhooks"))
    _assert_documented(document, "get", "/webhooks/{webhook_id}", api.get(f"/webhooks/{webhook}"))
    _assert_documented(document, "get", "/webhooks/{webhook_id}/deliveries", api.get(f"/webhooks/{webhook}/deliveries"))
    deleted = api.delete(f"/webhooks/{webhook}")
    assert deleted.status_code == 200 and deleted.json() is True
    assert _ok_schema(document, "delete", "/webhooks/{webhook_id}") == {"type": "boolean", "const": True}
    _assert_documented(document, "delete", "/webhooks/{webhook_id}", deleted)


def test_notification_answers_are_documented(live_server: LiveServer, api: httpx2.Client) -> None:
    document = _document(live_server)
    _assert_documented(document, "get", "/notifications", api.get("/notifications"))
    _assert_documented(document, "post", "/notifications/read", api.post("/notifications/read", json={}))
    _assert_documented(document, "get", "/badges", api.get("/badges"))


def test_unknown_attachment_404_is_documented(live_server: LiveServer, api: httpx2.Client) -> None:
    body = {"message_text": "Hello", "message_attachments": [{"id": "file_doesnotexist"}]}
    response = api.post("/ai_chats", json=body)
    assert response.status_code == 404, response.text
    assert "404" in _operation(_document(live_server), "post", "/ai_chats")["responses"]


def test_every_body_limit_413_is_documented(live_server: LiveServer, api: httpx2.Client) -> None:
    document = _document(live_server)
    with_body = {
        op["operationId"] for item in document["paths"].values() for op in item.values() if "requestBody" in op
    }
    assert len(_BODY_OPERATIONS) == 9 and set(_BODY_OPERATIONS) <= with_body
    chat = api.post("/ai_chats", json={"message_text": "Hello"}).json()["id"]
    too_large = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    for operation_id, (method, path) in _BODY_OPERATIONS.items():
        url = path.replace("{chat_id}", chat)
        response = api.request(method, url, content=too_large, headers={"Content-Type": "application/json"})
        assert response.status_code == 413, (operation_id, response.text)
        assert "413" in _operation(document, method, path)["responses"], operation_id
    assert "413" in _operation(document, "post", "/files")["responses"]


@pytest.mark.parametrize(
    "query",
    [
        {"first": "2"},
        {"last": "2"},
        {"first": "2", "after": "x"},
        {"last": "2", "before": "x"},
        {"first": "2", "last": "2"},
    ],
)
def test_first_and_last_exclude_each_other(live_server: LiveServer, api: httpx2.Client, query: dict[str, str]) -> None:
    """The paging parameters are four flat query parameters (as in the reference API); that ``first``
    and ``last`` exclude each other, which no parameter schema can say, is the operation's
    ``x-mutually-exclusive-parameters`` (and their descriptions), and the server answers 422."""
    document = _document(live_server)
    chat = api.post("/ai_chats", json={"message_text": "Hello"}).json()["id"]
    for path in ("/ai_chats", "/ai_chats/{chat_id}/messages"):
        operation = _operation(document, "get", path)
        paging = ("first", "after", "last", "before")
        parameters = {p["name"]: p for p in operation["parameters"] if p["name"] in paging}
        assert tuple(parameters) == paging, path
        assert {p["in"] for p in parameters.values()} == {"query"}
        assert "Not with `last`." in parameters["first"]["description"]
        assert "Not with `first`." in parameters["last"]["description"]
        exclusive = operation["x-mutually-exclusive-parameters"]
        assert exclusive == [["first", "last"]], path
        assert "422" in operation["responses"], path
        documented = not any(set(group) <= set(query) for group in exclusive)
        assert documented is ("first" not in query or "last" not in query)
        response = api.get(path.replace("{chat_id}", chat), params=query)
        refused = response.status_code == 422 and "not both" in response.text
        assert refused is not documented, (path, response.text)


@pytest.mark.parametrize("value", ["-1", "1e3", "+1", "\u00b2", "x", "9223372036854775808"])
def test_event_stream_start_rules_are_documented(live_server: LiveServer, api: httpx2.Client, value: str) -> None:
    """What ``Last-Event-ID`` and ``?after=`` refuse (422, before the stream starts) the document refuses too."""
    document = _document(live_server)
    operation = _operation(document, "get", "/ai_chats/{chat_id}/events")
    assert "422" in operation["responses"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    header, after = parameters["Last-Event-ID"]["schema"], parameters["after"]["schema"]
    for valid in ("0", "9223372036854775807", "latest"):
        assert _validator(document, header).is_valid(valid)
    if value.isascii() and value.isdigit():  # too large: the header's description and the query's maximum
        assert not _validator(document, after).is_valid(int(value))
        assert "9223372036854775807" in parameters["Last-Event-ID"]["description"]
    else:
        assert not _validator(document, header).is_valid(value)
        assert not _validator(document, after).is_valid(value)
    chat = api.post("/ai_chats", json={"message_text": "Hello"}).json()["id"]
    header_value = value.encode()  # as bytes: a header of other scripts' digits is sent as UTF-8
    for request in ({"headers": {"Last-Event-ID": header_value}}, {"params": {"after": value}}):
        response = api.get(f"/ai_chats/{chat}/events", **request)
        assert response.status_code == 422, (request, response.text)


@pytest.mark.parametrize(
    ("kinds", "valid"),
    [
        ({"cron": "0 9 * * 1"}, True),
        ({"interval_seconds": 3600}, True),
        ({"run_at": "2030-01-01T09:00:00Z"}, True),
        ({"cron": "0 9 * * 1", "interval_seconds": None, "run_at": None}, True),
        ({}, False),
        ({"cron": None, "interval_seconds": None}, False),
        ({"cron": "0 9 * * 1", "interval_seconds": 3600}, False),
        ({"interval_seconds": 3600, "run_at": "2030-01-01T09:00:00Z"}, False),
        ({"cron": "0 9 * * 1", "interval_seconds": 60, "run_at": "2030-01-01T09:00:00Z"}, False),
    ],
)
def test_schedule_has_one_kind(live_server: LiveServer, api: httpx2.Client, kinds: dict[str, Any], valid: bool) -> None:
    """Exactly one of cron, interval and run_at, in the document as in the server (null counts as absent)."""
    document = _document(live_server)
    body = {"prompt": "Report", "timezone": "Europe/Paris", **kinds}
    for name in ("ScheduleInput", "SchedulePreviewInput"):
        assert _validator(document, {"$ref": f"#/components/schemas/{name}"}).is_valid(body) is valid, name
    response = api.post("/schedule_preview", json=body)
    assert response.status_code == (200 if valid else 422), response.text


def test_failed_authentication_limit_429_is_documented(database_url: str, tmp_path: Path) -> None:
    """On a server of its own: the shared one must not start refusing this address."""
    server = start_server(database_url, tmp_path / "serve.log", {"AICHATS_AUTH_FAILURES_PER_MINUTE": "1"})
    try:
        bad = {"Authorization": "Bearer ak_notakey"}
        statuses = [httpx2.get(server.api + "/ai_chats", headers=bad).status_code for _ in range(3)]
        limited = httpx2.get(server.api + "/ai_chats", headers=bad)
        assert statuses[0] == 401 and statuses[-1] == limited.status_code == 429, statuses
        assert limited.headers["Retry-After"].isdigit() and int(limited.headers["Retry-After"]) >= 1
        document = _document(server)
    finally:
        stop_server(server)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and operation.get("security"):
                assert "429" in operation["responses"], (method, path)
                header = operation["responses"]["429"]["headers"]["Retry-After"]
                assert header["required"] and header["schema"]["type"] == "integer", (method, path)


def test_the_document_has_every_declared_operation_each_with_the_shape_of_its_answer(live_server: LiveServer) -> None:
    """The document is written from the declarations (``aichats.api.registry``): all of them, once
    each, and every 2xx answer says its shape (a schema with properties, a ``$ref``, or a constant)."""
    document = _document(live_server)
    documented = [
        (op["operationId"], method, path)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    ]
    assert sorted(documented) == sorted((op.operation_id, op.method.lower(), op.path) for op in OPERATIONS)
    assert len({operation_id for operation_id, _, _ in documented}) == len(documented)
    for _, method, path in documented:
        responses = _operation(document, method, path)["responses"]
        (ok,) = [code for code in responses if code.startswith("2")]
        (content,) = responses[ok]["content"].values()
        schema = content["schema"]
        assert "$ref" in schema or "const" in schema or "properties" in schema, (method, path, schema)
