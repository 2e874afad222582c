"""the active-cron filter's index holds only the chats with an active schedule (issue 13)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_LIVE = sa.text("deleted_at IS NULL")
_ACTIVE_CRON = sa.text("deleted_at IS NULL AND has_active_cron")


def upgrade() -> None:
    # (user_id, has_active_cron, pk) over every live chat took an entry per new chat, at a
    # random place (the user's); few chats have an active schedule, and only those are
    # listed with ``only_active_crons``: a partial index of those alone is smaller, and a
    # new chat (no schedule yet) writes nothing to it.
    op.drop_index("ix_ai_chats_user_cron_pk_live", table_name="ai_chats")
    op.create_index(
        "ix_ai_chats_user_active_cron_pk",
        "ai_chats",
        ["user_id", "pk"],
        sqlite_where=_ACTIVE_CRON,
        postgresql_where=_ACTIVE_CRON,
    )


def downgrade() -> None:
    op.drop_index("ix_ai_chats_user_active_cron_pk", table_name="ai_chats")
    op.create_index(
        "ix_ai_chats_user_cron_pk_live",
        "ai_chats",
        ["user_id", "has_active_cron", "pk"],
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
