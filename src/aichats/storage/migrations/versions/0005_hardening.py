"""hardening (issue 10)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A schedule that cannot be computed is quarantined, and says why.
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("last_error", sa.Text, nullable=True))
    # Deltas are now deleted when their reply ends (its final event has the whole text);
    # those kept so far go too (a reply streaming meanwhile still ends with its final event).
    # The table's newest row stays: SQLite gives a new row the largest id + 1, and a client
    # resuming from a deleted newest id would miss the event that reused it.
    op.execute("DELETE FROM chat_events WHERE type = 'message.delta' AND pk < (SELECT max(pk) FROM chat_events)")


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("last_error")
