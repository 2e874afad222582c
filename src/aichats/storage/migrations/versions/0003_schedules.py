"""schedules

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 08:53:05.416342
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("chat_pk", sa.BigInteger(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("run_at", sa.BigInteger(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.BigInteger(), nullable=True),
        sa.Column("last_run_at", sa.BigInteger(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["chat_pk"], ["ai_chats.pk"], name=op.f("fk_schedules_chat_pk_ai_chats")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_schedules")),
        sa.UniqueConstraint("chat_pk", name=op.f("uq_schedules_chat_pk")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index(
            "ix_schedules_due",
            ["next_run_at"],
            unique=False,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            "uq_runs_chat_pk_scheduled_for",
            ["chat_pk", "scheduled_for"],
            unique=True,
            sqlite_where=sa.text("trigger = 'schedule'"),
            postgresql_where=sa.text("trigger = 'schedule'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_runs_chat_pk_scheduled_for",
            sqlite_where=sa.text("trigger = 'schedule'"),
            postgresql_where=sa.text("trigger = 'schedule'"),
        )

    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_schedules_due", sqlite_where=sa.text("active"), postgresql_where=sa.text("active"))

    op.drop_table("schedules")
