"""The services import each other at module level, one way: no import hidden in a function
to work around a cycle (``messages`` imports ``chats``; ``chats`` imports ``messages`` for a
type only)."""

from __future__ import annotations

import ast
from pathlib import Path

from aichats import services

SERVICES = Path(services.__file__).parent


def test_no_service_imports_inside_a_function() -> None:
    hidden = []
    for path in sorted(SERVICES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        hidden.append(f"{path.name}:{inner.lineno}")
    assert hidden == []


def test_chats_imports_messages_for_types_only() -> None:
    tree = ast.parse((SERVICES / "chats.py").read_text())
    runtime = [
        node
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and (node.module == "aichats.services.messages" or any(a.name == "messages" for a in node.names))
    ]
    assert runtime == []
