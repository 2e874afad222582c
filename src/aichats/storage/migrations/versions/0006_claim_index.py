"""the claim's index: active runs by chat (issue 11)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    # A worker claims a run only if its chat has no older active run: this index answers
    # that probe with one entry, where (chat_pk, pk) read the chat's whole history.
    op.create_index(
        "ix_runs_active_chat_pk_pk", "runs", ["chat_pk", "pk"], sqlite_where=_ACTIVE, postgresql_where=_ACTIVE
    )


def downgrade() -> None:
    op.drop_index("ix_runs_active_chat_pk_pk", table_name="runs")
