"""A chat's ``row_version`` moves whenever a value its JSON shows changes, whoever changes it
(migration 0010's trigger): the API keeps chats' answers by (pk, row_version)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sqlite3
from contextlib import closing
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

import aichats.services
from aichats.services import chats
from aichats.services.chats import CHAT_JSON_COLUMNS
from aichats.storage.schema import ai_chats
from tests.support.databases import backend_of, execute, query

SERVICES = [info.name for info in pkgutil.iter_modules(aichats.services.__path__)]

# A new value for each column chat_json shows (id and user_id: any text; no foreign key to
# another user is needed for a row that is only read back).
CHANGES = {
    "id": "'aich_renamed'",
    "user_id": "'user_x'",
    "title": "'Renamed'",
    "notification_preference": "'none'",
    "agent_identifier": "'general'",
    "message_count": "message_count + 1",
    "blended_token_usage_micros": "blended_token_usage_micros + 1",
    "created_at": "created_at + 1",
    "updated_at": "updated_at + 1",
    "last_message_at": "1",
}


def rows(database_url: str, sql: str) -> list[dict[str, Any]]:
    if backend_of(database_url) == "sqlite":
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(sql)]
    return query(database_url, sql)


@pytest.fixture
def chat_url(database_url: str) -> str:
    execute(database_url, "INSERT INTO users (id, created_at) VALUES ('user_1', 0)")
    execute(database_url, "INSERT INTO users (id, created_at) VALUES ('user_x', 0)")
    execute(
        database_url,
        "INSERT INTO ai_chats (id, user_id, title, notification_preference, agent_identifier, message_count, "
        "blended_token_usage_micros, created_at, updated_at, last_message_at, activity_at) "
        "VALUES ('aich_1', 'user_1', 'T', 'all', 'support', 1, 0, 10, 10, 10, 10)",
    )
    return database_url


def version(database_url: str) -> int:
    (row,) = rows(database_url, "SELECT row_version FROM ai_chats")
    return int(row["row_version"])


def test_every_column_the_answer_shows_moves_it_by_one(chat_url: str) -> None:
    assert set(CHANGES) == set(CHAT_JSON_COLUMNS)
    assert version(chat_url) == 0
    for n, (column, value) in enumerate(CHANGES.items(), 1):
        execute(chat_url, f"UPDATE ai_chats SET {column} = {value}")
        assert version(chat_url) == n, column
    execute(chat_url, "UPDATE ai_chats SET title = 'Again', message_count = 9")  # one statement: one step
    assert version(chat_url) == len(CHANGES) + 1


def test_what_the_answer_does_not_show_leaves_it(chat_url: str) -> None:
    """Badges, the schedule flag, the tools: no answer changes, so no memo entry is wasted."""
    for sql in (
        "UPDATE ai_chats SET unread_count = 3",
        "UPDATE ai_chats SET has_active_cron = TRUE",
        "UPDATE ai_chats SET tools = '[]'",
        "UPDATE ai_chats SET title = title",  # the same value: nothing changed
    ):
        execute(chat_url, sql)
    assert version(chat_url) == 0


def test_an_update_that_moves_it_itself_is_not_moved_again(chat_url: str) -> None:
    execute(chat_url, "UPDATE ai_chats SET title = 'New', row_version = row_version + 5")
    assert version(chat_url) == 5


def _set_columns(statement: sa.Update) -> set[str]:
    """The columns an UPDATE's SET clause names, from its SQL."""
    sql = str(statement.compile(dialect=sqlite.dialect()))
    clause = re.split(r"\bWHERE\b|\bFROM\b|\bRETURNING\b", sql.split(" SET ", 1)[1])[0]
    return set(re.findall(r"(\w+)=", clause.replace(" ", "")))


def test_the_services_updates_of_what_the_answer_shows_move_it_themselves() -> None:
    """Not left to the trigger, which on SQLite can only update the row a second time (one
    more write per change): every UPDATE of chats in the service's modules that sets a value
    chat_json shows sets row_version too."""
    statements = {
        f"{module.__name__}.{name}": value
        for module in (chats, *(importlib.import_module(f"aichats.services.{m}") for m in SERVICES))
        for name, value in vars(module).items()
        if isinstance(value, sa.Update) and value.table is ai_chats
    }
    for fields in ({"title"}, {"notification_preference"}, {"tools"}):
        statements[f"PATCH {fields}"] = chats._update_statement(frozenset(fields))
    assert len(statements) > 10
    for name, statement in statements.items():
        columns = _set_columns(statement)
        if columns & set(CHAT_JSON_COLUMNS):
            assert "row_version" in columns, name
