"""runs, events and files

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:55:26.003668
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=127), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_files_user_id_users")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_files")),
        sa.UniqueConstraint("id", name=op.f("uq_files_id")),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_files_user_id"), ["user_id"], unique=False)

    op.create_table(
        "chat_events",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("chat_pk", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["chat_pk"], ["ai_chats.pk"], name=op.f("fk_chat_events_chat_pk_ai_chats")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_chat_events")),
    )
    with op.batch_alter_table("chat_events", schema=None) as batch_op:
        batch_op.create_index("ix_chat_events_chat_pk_pk", ["chat_pk", "pk"], unique=False)

    with op.batch_alter_table("ai_chats", schema=None) as batch_op:
        batch_op.add_column(sa.Column("title_locked", sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("worker_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("assistant_message_pk", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("model", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("input_tokens", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("output_tokens", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("blended_tokens_micros", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.drop_index("ix_runs_queued_pk")
        batch_op.create_index(
            "ix_runs_active_pk",
            ["pk"],
            unique=False,
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_runs_assistant_message_pk_messages"), "messages", ["assistant_message_pk"], ["pk"]
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_runs_assistant_message_pk_messages"), type_="foreignkey")
        batch_op.drop_index(
            "ix_runs_active_pk",
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        )
        batch_op.create_index(
            "ix_runs_queued_pk",
            ["pk"],
            unique=False,
            sqlite_where=sa.text("status = 'queued'"),
            postgresql_where=sa.text("status = 'queued'"),
        )
        batch_op.drop_column("blended_tokens_micros")
        batch_op.drop_column("output_tokens")
        batch_op.drop_column("input_tokens")
        batch_op.drop_column("model")
        batch_op.drop_column("assistant_message_pk")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("worker_id")
        batch_op.drop_column("attempts")

    with op.batch_alter_table("ai_chats", schema=None) as batch_op:
        batch_op.drop_column("title_locked")

    with op.batch_alter_table("chat_events", schema=None) as batch_op:
        batch_op.drop_index("ix_chat_events_chat_pk_pk")

    op.drop_table("chat_events")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_user_id"))

    op.drop_table("files")
