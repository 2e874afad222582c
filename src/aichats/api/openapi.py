"""The OpenAPI 3.1 document served at ``/openapi.json``, written from the operations'
declarations (:data:`aichats.api.registry.OPERATIONS`) and the models they name: the
request models the endpoints validate with, the response models tests check answers with.

Its one server is the relative URL ``/api/v1``: it resolves against wherever the
document was fetched from, so the document never repeats a request's ``Host`` header
(which a client or a proxy in front of the service controls) and is the same for all.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aichats import __version__
from aichats.api import schemas
from aichats.api.operations import API, Operation, Stream
from aichats.api.registry import OPERATIONS

_ERRORS = {
    400: "Malformed request (body is not a JSON object).",
    401: "No API key, or an unknown or revoked one.",
    403: "The API key lacks the permission this call needs.",
    404: "No such AI chat (or file) for this user (other users' are never revealed).",
    409: "The resource is not in a state that allows this (e.g. the message is not a failed reply).",
    413: "Request body too large.",
    422: "A field breaks the documented rules; nothing was changed.",
    429: "Too many requests: the API key's rate limit for this operation (`rate_limit_exceeded`), or too many "
    "failed authentications from this client address; retry after `Retry-After` seconds.",
}
# What the 429 of an operation that starts an agent turn may also say.
_BUDGET = " Or the user's daily token budget is used up (`token_budget_exceeded`): retry after the next UTC midnight."

_RATE_LIMIT = {
    "RateLimit-Limit": {
        "description": "Requests the API key may make to this operation per minute (`AICHATS_RATE_LIMIT_PER_MINUTE`; "
        "absent when there is no limit).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "RateLimit-Remaining": {
        "description": "Requests left to the key for this operation in the current minute (as the answering server "
        "process knows it).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the current minute ends and the count starts again.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 60},
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    **_RATE_LIMIT,
}

_DESCRIPTION = (
    'Every error answers `{"error": {"type": "...", "message": "..."}}`.\n\n'
    "No string may contain the NUL character (U+0000, `%00`), which neither database can store: a NUL in any "
    "string of a JSON body (at any depth, field names included) or in a query parameter is a 422 "
    "(`invalid_request`); a NUL in a path id is a 404, as any id that does not exist."
)

_PATH_IDS = {
    "chat_id": "The AI chat's id (`aich_...`).",
    "message_id": "The message's id (`aimsg_...`).",
    "tool_call_id": "The tool call's id (`tcall_...`).",
    "webhook_id": "The webhook's id (`wh_...`).",
    "tool_server_id": "The tool server's id (`tsrv_...`).",
}
_PATH_ID = re.compile(r"\{(\w+)\}")

# Models no operation names but the document describes: the notifications stream's event data,
# the error envelope every operation answers with, and /healthz's answer.
_ALSO = (schemas.Badges, schemas.Error, schemas.Health)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _event_stream(stream: Stream, description: str) -> dict[str, Any]:
    """An event stream whose ``schema`` describes each event (OpenAPI 3.1 has no ``itemSchema``): the
    fields a client's EventSource gives it, ``data`` being JSON text."""
    properties: dict[str, Any] = {
        "event": stream.event,
        "data": {"type": "string", "contentMediaType": "application/json"},
    }
    if stream.with_id:
        properties["id"] = {"type": "string", "pattern": "^[0-9]+$", "description": "Resume after it with this."}
    schema = {"type": "object", "properties": properties, "required": sorted(properties)}
    return {"description": description, "content": {"text/event-stream": {"schema": schema}}}


def _answer(op: Operation) -> dict[str, Any]:
    if isinstance(op.response, Stream):
        return _event_stream(op.response, op.response_description)
    schema = op.response if isinstance(op.response, dict) else _ref(op.response)
    return _json(schema, op.response_description)


def _operation(op: Operation) -> dict[str, Any]:
    responses = {str(op.status): _answer(op)}
    responses[str(op.status)]["headers"] = _RATE_LIMIT
    for code in (401, 403, 429, *op.errors):
        responses[str(code)] = _json(_ref(schemas.Error), _ERRORS[code])
        if code not in (401, 403):  # answered after the key's request was counted: what is left of its limit
            responses[str(code)]["headers"] = _RATE_LIMIT
    responses["429"]["headers"] = _RETRY_AFTER
    if op.turn:
        responses["429"]["description"] += _BUDGET
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": f"{op.summary}\n\nRequired permission: `{op.scope}`.",
        "tags": [op.tag],
        "security": [{"bearer": []}],
        "responses": responses,
    }
    if op.parameters:
        document["parameters"] = list(op.parameters)
    if op.body is not None:
        content = {"application/json": {"schema": _ref(op.body)}}
        document["requestBody"] = {"required": op.body_required, "content": content}
    elif op.form is not None:
        document["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": op.form}}}
    if op.exclusive:
        document["x-mutually-exclusive-parameters"] = [list(group) for group in op.exclusive]
    return document


def _path_item(path: str) -> dict[str, Any]:
    """A path's shared part: its ids, each a path parameter."""
    names = _PATH_ID.findall(path)
    if not names:
        return {}
    return {
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": _PATH_IDS[name]}
            for name in names
        ]
    }


def _models() -> list[type[BaseModel]]:
    named: list[type[BaseModel]] = []
    for op in OPERATIONS:
        if op.body is not None:
            named.append(op.body)
        if isinstance(op.response, type):
            named.append(op.response)
    return list(dict.fromkeys([*named, *_ALSO]))


@lru_cache
def _document() -> dict[str, Any]:
    _, components = models_json_schema(
        [(m, "validation") for m in _models()], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item = paths.setdefault(op.path, _path_item(op.path))
        item[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "servers": [{"url": API}],
        "info": {
            "title": "aichats: the AI Chats API",
            "version": __version__,
            "description": _DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": components["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from `aichats keys create`."}
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    return _document()
