"""The web app's hand-written API types (``api-types.d.ts``) name the fields of /openapi.json.

``tsc`` checks the app's JavaScript against those types; this checks the types against the
API: the same fields, the same optional ones, the same nullable ones. (No browser needed.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aichats.api.openapi import openapi_document

TYPES = Path(__file__).parents[2] / "src" / "aichats" / "web" / "api-types.d.ts"
NOT_IN_OPENAPI = {"Session", "MessageDelta"}  # GET /web/session, and an event's data
INTERFACE = re.compile(r"^export interface (\w+) \{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
FIELD = re.compile(r"^\s+(\w+)(\??): ([^;]+);", re.MULTILINE)


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
