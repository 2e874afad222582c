"""limits: rate limits per key and operation, token usage per user and day, token budgets (issue 13)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PrimaryKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("granted", sa.Integer, nullable=False),
        sa.UniqueConstraint("key_id", "operation"),
    )
    op.create_table(
        "token_usage",
        sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("blended_tokens_micros", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("user_id", "day"),
    )
    op.create_table(
        "token_budgets",
        sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False, unique=True),
        sa.Column("tokens_per_day", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("token_budgets")
    op.drop_table("token_usage")
    op.drop_table("rate_limits")
