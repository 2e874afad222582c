"""a chat's row version, moved by a trigger whenever its JSON changes, in the default list's index (issue 13)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_LIVE = sa.text("deleted_at IS NULL")
_ACTIVE_CRON = sa.text("deleted_at IS NULL AND has_active_cron")
# The lists' indexes by pk, with the row version: (name, condition).
_BY_PK = (("ix_ai_chats_user_pk_live", _LIVE), ("ix_ai_chats_user_active_cron_pk", _ACTIVE_CRON))

# What chat_json shows (aichats.services.chats.CHAT_JSON_COLUMNS): a change of any of them
# moves the row's version, whoever makes it (the service, a worker, an operator's SQL). The
# API keeps chats' answers by (pk, row_version); other columns (badges, the schedule flag,
# the tools) change no answer, and leave it.
_SHOWN = (
    "id",
    "user_id",
    "title",
    "notification_preference",
    "agent_identifier",
    "message_count",
    "blended_token_usage_micros",
    "created_at",
    "updated_at",
    "last_message_at",
)


def _changed(distinct: str) -> str:
    return " OR ".join(f"NEW.{name} {distinct} OLD.{name}" for name in _SHOWN)


# Fired only by an UPDATE that names one of them (a badge's or the schedule flag's does not).
_EVENT = f"UPDATE OF {', '.join(_SHOWN)} ON ai_chats"


# SQLite's triggers cannot change NEW: the AFTER trigger updates the row again (which,
# its version moved, does not fire it again). A RETURNING clause shows the row before it.
_SQLITE_TRIGGER = f"""
CREATE TRIGGER ai_chats_row_version AFTER {_EVENT}
FOR EACH ROW WHEN NEW.row_version = OLD.row_version AND ({_changed("IS NOT")})
BEGIN
    UPDATE ai_chats SET row_version = OLD.row_version + 1 WHERE pk = NEW.pk;
END
"""
_POSTGRESQL_FUNCTION = f"""
CREATE FUNCTION ai_chats_row_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.row_version = OLD.row_version AND ({_changed("IS DISTINCT FROM")}) THEN
        NEW.row_version := OLD.row_version + 1;
    END IF;
    RETURN NEW;
END
$$
"""
_POSTGRESQL_TRIGGER = f"""
CREATE TRIGGER ai_chats_row_version BEFORE {_EVENT}
FOR EACH ROW EXECUTE FUNCTION ai_chats_row_version()
"""


def _postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    op.add_column("ai_chats", sa.Column("row_version", sa.BigInteger, nullable=False, server_default="0"))
    # A page of the default order (newest first), or of the active-cron filter, reads its
    # chats' (pk, row_version) from the index alone, and their answers from the API's memo:
    # no table page per chat. (Both indexes alike: else SQLite's planner takes the covering
    # one for the filter too, and walks every live chat of the user.)
    for name, condition in _BY_PK:
        op.drop_index(name, table_name="ai_chats")
        op.create_index(
            name,
            "ai_chats",
            ["user_id", "pk", "row_version", "deleted_at"],  # deleted_at: schema.py says why
            sqlite_where=condition,
            postgresql_where=condition,
        )
    if _postgresql():
        op.execute(_POSTGRESQL_FUNCTION)
        op.execute(_POSTGRESQL_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if _postgresql():
        op.execute("DROP TRIGGER ai_chats_row_version ON ai_chats")
        op.execute("DROP FUNCTION ai_chats_row_version()")
    else:
        op.execute("DROP TRIGGER ai_chats_row_version")
    for name, condition in _BY_PK:
        op.drop_index(name, table_name="ai_chats")
        op.create_index(name, "ai_chats", ["user_id", "pk"], sqlite_where=condition, postgresql_where=condition)
    with op.batch_alter_table("ai_chats") as batch:
        batch.drop_column("row_version")
