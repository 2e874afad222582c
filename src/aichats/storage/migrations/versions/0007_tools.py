"""tools: MCP tool servers, tool calls, a turn's steps, runs waiting for approval (issue 12)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PrimaryKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ACTIVE_BEFORE = sa.text("status IN ('queued', 'running')")
_ACTIVE = sa.text("status IN ('queued', 'running', 'waiting')")


def _active_indexes(where: sa.TextClause) -> None:
    op.create_index("ix_runs_active_pk", "runs", ["pk"], sqlite_where=where, postgresql_where=where)
    op.create_index("ix_runs_active_chat_pk_pk", "runs", ["chat_pk", "pk"], sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    with op.batch_alter_table("ai_chats") as batch:
        batch.add_column(sa.Column("tools", sa.Text, nullable=True))
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("tools", sa.Text, nullable=True))
        batch.add_column(sa.Column("allow_changes", sa.Boolean, nullable=False, server_default=sa.false()))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("resumes", sa.Integer, nullable=False, server_default="0"))
    # A run waiting for a tool's approval is active: it holds its chat's later turns back.
    op.drop_index("ix_runs_active_pk", table_name="runs")
    op.drop_index("ix_runs_active_chat_pk_pk", table_name="runs")
    _active_indexes(_ACTIVE)

    op.create_table(
        "reply_steps",
        sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        sa.Column("run_pk", sa.BigInteger, sa.ForeignKey("runs.pk"), nullable=False),
        sa.Column("message_pk", sa.BigInteger, sa.ForeignKey("messages.pk"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("run_pk", "step"),
    )
    op.create_index("ix_reply_steps_message_pk", "reply_steps", ["message_pk"])
    op.create_table(
        "tool_calls",
        sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("chat_pk", sa.BigInteger, sa.ForeignKey("ai_chats.pk"), nullable=False),
        sa.Column("message_pk", sa.BigInteger, sa.ForeignKey("messages.pk"), nullable=False),
        sa.Column("run_pk", sa.BigInteger, sa.ForeignKey("runs.pk"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=True),
        sa.Column("server", sa.String(64), nullable=True),
        sa.Column("tool", sa.String(255), nullable=False),
        sa.Column("arguments", sa.Text, nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("needs_approval", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("is_error", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("finished_at", sa.BigInteger, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("decided_at", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("run_pk", "step", "position"),
    )
    op.create_index("ix_tool_calls_message_pk_pk", "tool_calls", ["message_pk", "pk"])
    op.create_table(
        "tool_servers",
        sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=True),
        sa.Column("tools", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("refreshed_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("user_id", "name"),
    )
    op.create_index("ix_tool_servers_user_id_pk", "tool_servers", ["user_id", "pk"])


def downgrade() -> None:
    op.drop_table("tool_servers")
    op.drop_table("tool_calls")
    op.drop_table("reply_steps")
    op.drop_index("ix_runs_active_pk", table_name="runs")
    op.drop_index("ix_runs_active_chat_pk_pk", table_name="runs")
    _active_indexes(_ACTIVE_BEFORE)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("resumes")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("allow_changes")
        batch.drop_column("tools")
    with op.batch_alter_table("ai_chats") as batch:
        batch.drop_column("tools")
