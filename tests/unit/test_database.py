"""Statement compilation for the raw drivers."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aichats.storage.database import compile_statement, sqlalchemy_url, sqlite_path
from aichats.storage.schema import ai_chats


def test_compiles_once_per_dialect_with_ordered_parameters() -> None:
    statement = sa.select(ai_chats.c.id).where(ai_chats.c.user_id == sa.bindparam("u")).limit(sa.bindparam("n"))
    lite = compile_statement(statement, "sqlite")
    assert compile_statement(statement, "sqlite") is lite
    assert lite.bind({"u": "user_a", "n": 5}) == ("user_a", 5, 0)  # SQLite adds OFFSET 0
    pg = compile_statement(statement, "postgresql")
    assert "$1" in pg.sql and pg.bind({"u": "user_a", "n": 5}) == ("user_a", 5)


def test_expanding_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="expanding"):
        compile_statement(sa.select(ai_chats.c.id).where(ai_chats.c.id.in_(["a", "b"])), "sqlite")


def test_urls() -> None:
    assert sqlite_path("sqlite:///aichats.db") == "aichats.db"
    assert sqlite_path("sqlite:////tmp/x.db") == "/tmp/x.db"
    with pytest.raises(ValueError):
        sqlite_path("sqlite:///:memory:")
    assert sqlalchemy_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
