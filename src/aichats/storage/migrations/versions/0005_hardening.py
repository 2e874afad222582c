"""hardening (issue 10)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401 - used by the sections below
from alembic import op  # noqa: F401 - used by the sections below

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # -- schedules (quarantine) --
    # -- end schedules --
    # -- events --
    # -- end events --
    # -- other --
    # -- end other --
    pass


def downgrade() -> None:
    # -- other --
    # -- end other --
    # -- events --
    # -- end events --
    # -- schedules (quarantine) --
    # -- end schedules --
    pass
