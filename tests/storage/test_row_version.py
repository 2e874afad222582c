"""A chat's ``row_version`` moves whenever a value its JSON shows changes, whoever changes it
(migration 0010's trigger): the API keeps chats' answers by (pk, row_version)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import pytest

from aichats.services.chats import CHAT_JSON_COLUMNS
from tests.support.databases import backend_of, execute, query

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
