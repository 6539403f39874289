"""Candle gaps: missing ranges the collector fetches again, or records as having no trade.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "candle_gaps",
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.Column("first_open_ms", sa.BigInteger, nullable=False),
        sa.Column("last_open_ms", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("found_at_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "timeframe", "first_open_ms", name="pk_candle_gaps"
        ),
        sa.CheckConstraint("state IN ('open', 'empty', 'repaired')", name="ck_candle_gaps_state"),
        sa.CheckConstraint("last_open_ms >= first_open_ms", name="ck_candle_gaps_range"),
    )
    op.create_index("ix_candle_gaps_state", "candle_gaps", ["state"])


def downgrade() -> None:
    op.drop_index("ix_candle_gaps_state", table_name="candle_gaps")
    op.drop_table("candle_gaps")
