"""The web app's hand-written API types (``api-types.d.ts``) name the fields of /openapi.json.

``tsc`` checks the app's JavaScript against those types; this checks the types against the
API: the same fields, the same optional ones, the same nullable ones, and the same values
where a field takes one of a few strings (a status, a kind). (No browser needed.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aichats.api.openapi import openapi_document

TYPES = Path(__file__).parents[2] / "src" / "aichats" / "web" / "api-types.d.ts"
# GET /web/session, and events' data
NOT_IN_OPENAPI = {"Session", "MessageDelta", "ToolCallEvent"}
INTERFACE = re.compile(r"^export interface (\w+) \{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
FIELD = re.compile(r"^\s+(\w+)(\??): ([^;]+);", re.MULTILINE)
ALIAS = re.compile(r'^export type (\w+) = ((?:"\w+"(?: \| )?)+);$', re.MULTILINE)


def _interfaces() -> dict[str, dict[str, tuple[bool, bool]]]:
    """Interface -> field -> (optional, nullable)."""
    found = {}
    for name, body in INTERFACE.findall(TYPES.read_text()):
        found[name] = {
            field: (optional == "?", "null" in [part.strip() for part in kind.split("|")])
            for field, optional, kind in FIELD.findall(body)
        }
    return found


def _nullable(schema: dict[str, Any]) -> bool:
    kinds = [schema.get("type")] + [option.get("type") for option in schema.get("anyOf", [])]
    return "null" in kinds or (isinstance(schema.get("type"), list) and "null" in schema["type"])


def _declared_values(kind: str, aliases: dict[str, list[str]]) -> list[str] | None:
    """The strings a field's TypeScript type allows, if it is a union of string literals (or an alias of one)."""
    parts = [part.strip() for part in kind.split("|") if part.strip() != "null"]
    if all(re.fullmatch(r'"\w+"', part) for part in parts):
        return sorted(part.strip('"') for part in parts)
    if len(parts) == 1 and parts[0] in aliases:
        return sorted(aliases[parts[0]])
    return None


def _schema_values(prop: dict[str, Any], schemas: dict[str, Any]) -> list[str] | None:
    """The strings an OpenAPI property allows, if it is an enum (inline, a $ref, or in an anyOf)."""
    for option in [prop, *prop.get("anyOf", [])]:
        if "$ref" in option:
            option = schemas[option["$ref"].rsplit("/", 1)[1]]
        if "enum" in option:
            return sorted(value for value in option["enum"] if value is not None)
        if "const" in option:
            return [option["const"]]
    return None


def test_types_name_the_openapi_fields() -> None:
    schemas = openapi_document()["components"]["schemas"]
    interfaces = _interfaces()
    assert len(interfaces) > 20, "the pattern no longer finds the interfaces"
    for name, fields in interfaces.items():
        if name in NOT_IN_OPENAPI:
            continue
        assert name in schemas, f"{name} is not a schema of /openapi.json"
        schema = schemas[name]
        required = set(schema.get("required", []))
        expected = {
            field: (field not in required, _nullable(prop)) for field, prop in schema.get("properties", {}).items()
        }
        assert fields == expected, name


def test_enums_match() -> None:
    schemas = openapi_document()["components"]["schemas"]
    text = TYPES.read_text()
    for name in ("AgentIdentifier", "NotificationPreference", "MessageSource"):
        declared = re.search(rf"^export type {name} = (.+);$", text, re.MULTILINE)
        assert declared, name
        assert sorted(re.findall(r'"(\w+)"', declared.group(1))) == sorted(schemas[name]["enum"]), name


def test_fields_of_a_few_strings_take_the_same_values() -> None:
    """A status, a role, a kind: the values the page handles are the API's."""
    schemas = openapi_document()["components"]["schemas"]
    text = TYPES.read_text()
    aliases = {name: re.findall(r'"(\w+)"', values) for name, values in ALIAS.findall(text)}
    checked = 0
    for name, body in INTERFACE.findall(text):
        if name in NOT_IN_OPENAPI:
            continue
        for field, _, kind in FIELD.findall(body):
            declared = _declared_values(kind, aliases)
            if declared is None:
                continue
            prop = schemas[name]["properties"][field]
            assert declared == _schema_values(prop, schemas), f"{name}.{field}"
            checked += 1
    assert checked >= 8, "the pattern no longer finds the fields of a few strings"
