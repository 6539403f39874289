"""Trading controls: the kill switch a person sets by hand, per account.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "trading_controls",
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("kill_switch", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", name="pk_trading_controls"),
    )


def downgrade() -> None:
    op.drop_table("trading_controls")
