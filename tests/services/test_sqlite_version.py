"""The services' statements run on SQLite 3.35 (docs/configuration.md), not only on this
machine's newer SQLite: no construct of a later version in their compiled SQL.

SQLite's ``->``/``->>`` operators are 3.38's (Ubuntu 22.04 ships 3.37.2): a statement using
them fails there, and the webhook outbox write runs in the transaction that completes or
fails a reply.
"""

from __future__ import annotations

import importlib
import pkgutil

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from aichats import services
from aichats.services import webhooks
from aichats.services.sql import json_records
from aichats.storage.database import compile_statement


def service_statements() -> dict[str, sa.Executable]:
    """Every statement a service module keeps as a constant, by ``module.NAME``."""
    found: dict[str, sa.Executable] = {}
    for info in pkgutil.iter_modules(services.__path__):
        module = importlib.import_module(f"{services.__name__}.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, sa.sql.expression.Executable) and not isinstance(value, sa.sql.elements.TextClause):
                found[f"{info.name}.{name}"] = value
    return found


def test_json_records_reads_fields_with_json_extract_on_sqlite() -> None:
    compiled = compile_statement(webhooks._ENQUEUE, "sqlite").sql
    assert "->" not in compiled
    assert "json_extract(" in compiled and "'$.webhook_pk'" in compiled
    record = sa.select(json_records("r", a=sa.Text()))
    assert "->" not in str(record.compile(dialect=sqlite.dialect()))


def test_no_service_statement_uses_sqlite_json_operators() -> None:
    statements = service_statements()
    assert "webhooks._ENQUEUE" in statements and "messages._INSERT" in statements
    uses = {name for name, statement in statements.items() if "->" in compile_statement(statement, "sqlite").sql}
    assert uses == set()


def test_postgresql_still_reads_fields_with_the_operator() -> None:
    assert "->> 'webhook_pk'" in compile_statement(webhooks._ENQUEUE, "postgresql").sql
