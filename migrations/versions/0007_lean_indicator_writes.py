"""Lean indicator writes: one index on the indicators table instead of two.

Indicator rows are written at the full candle rate, and each index costs every write about as
much as the row itself. The primary key (exchange, symbol, timeframe, open_time_ms) and the
index (symbol, timeframe, open_time_ms DESC) are replaced by one primary key,
(symbol, timeframe, open_time_ms, exchange): it keeps the rows unique, and it serves the
latest rows of a market, with or without its exchange, as the dropped index did.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.drop_index("ix_indicators_symbol_timeframe_time", table_name="indicators")
    with op.batch_alter_table("indicators") as batch:
        batch.drop_constraint("pk_indicators", type_="primary")
        batch.create_primary_key(
            "pk_indicators", ["symbol", "timeframe", "open_time_ms", "exchange"]
        )


def downgrade() -> None:
    with op.batch_alter_table("indicators") as batch:
        batch.drop_constraint("pk_indicators", type_="primary")
        batch.create_primary_key(
            "pk_indicators", ["exchange", "symbol", "timeframe", "open_time_ms"]
        )
    op.create_index(
        "ix_indicators_symbol_timeframe_time",
        "indicators",
        ["symbol", "timeframe", sa.text("open_time_ms DESC")],
    )
