"""Rows to the JSON the published clients parse."""

from __future__ import annotations

from typing import Any

from aichats.clock import isoformat_ms
from aichats.storage.database import Row


def decimal_tokens(micros: int) -> str:
    """Exact decimal text of a count of millionths of a token: ``123450000`` -> ``"123.45"``."""
    whole, fraction = divmod(micros, 1_000_000)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:06d}".rstrip("0")


def chat_json(row: Row) -> dict[str, Any]:
    last = row["last_message_at"]
    return {
        "id": row["id"],
        "title": row["title"],
        "notification_preference": row["notification_preference"],
        "agent_identifier": row["agent_identifier"],
        "message_count": row["message_count"],
        "blended_token_usage": decimal_tokens(row["blended_token_usage_micros"]),
        "created_at": isoformat_ms(row["created_at"]),
        "updated_at": isoformat_ms(row["updated_at"]),
        "last_message_at": None if last is None else isoformat_ms(last),
        "user": {"id": row["user_id"]},
    }
