"""Set parameters: a list of values bound as one JSON array, in one statement on both databases.

``database.py`` binds one value per parameter and compiles each statement once, so
SQLAlchemy's expanding ``IN`` (whose SQL changes with the list's length) is refused there.
A JSON array is one value whatever its length: SQLite reads it with ``json_each``,
PostgreSQL with ``json_array_elements`` (both name the element ``value``), and a field of
an object with ``json_extract`` and ``->>`` (SQLite's ``->>`` is 3.38's; aichats runs on
3.35, docs/configuration.md). The constructs below compile to the right one for each
dialect, so a statement is still written once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction


class _json_array_texts(GenericFunction[str]):
    """The elements of a JSON array of strings, as text: one row each, column ``value``."""

    inherit_cache = True
    name = "json_array_texts"
    type = sa.Text()


class _json_array_objects(GenericFunction[str]):
    """The elements of a JSON array of objects, as JSON: one row each, column ``value``."""

    inherit_cache = True
    name = "json_array_objects"
    type = sa.Text()


@compiles(_json_array_texts, "sqlite")
@compiles(_json_array_objects, "sqlite")
def _sqlite_elements(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_each({compiler.process(element.clauses, **kw)})"


@compiles(_json_array_texts, "postgresql")
def _postgres_texts(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_array_elements_text(CAST({compiler.process(element.clauses, **kw)} AS json))"


@compiles(_json_array_objects, "postgresql")
def _postgres_objects(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_array_elements(CAST({compiler.process(element.clauses, **kw)} AS json))"


class _json_field(GenericFunction[str]):
    """One field of a JSON object, as text: ``json_field(value, 'name')``."""

    inherit_cache = True
    name = "json_field"
    type = sa.Text()


@compiles(_json_field, "sqlite")
def _sqlite_field(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    # ``json_extract``, not ``->>``: the operator is SQLite 3.38's, and Ubuntu 22.04 has 3.37.
    value, field = element.clauses
    return f"json_extract({compiler.process(value, **kw)}, '$.{field.value}')"


@compiles(_json_field, "postgresql")
def _postgres_field(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    value, field = element.clauses
    return f"({compiler.process(value, **kw)} ->> '{field.value}')"


def json_texts(name: str) -> sa.Select[tuple[str]]:
    """The strings of the JSON array bound as ``name``, for ``column.in_(json_texts("ids"))``.

    Bind it with ``orjson.dumps(values).decode()``."""
    elements = _json_array_texts(sa.bindparam(name, type_=sa.Text)).table_valued("value")
    return sa.select(elements.c.value)


def json_records(name: str, **fields: sa.types.TypeEngine[Any]) -> sa.Subquery:
    """One row per object of the JSON array bound as ``name``, with ``fields`` as its columns
    (SQLite reads a field with ``json_extract``, PostgreSQL with ``->>``)."""
    elements = _json_array_objects(sa.bindparam(name, type_=sa.Text)).table_valued("value")
    columns = [sa.cast(_json_field(elements.c.value, sa.literal(f)), t).label(f) for f, t in fields.items()]
    return sa.select(*columns).subquery()
