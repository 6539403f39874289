"""Initial schema: candles, indicators, signals, orders, fills and positions.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the column lists: a migration must not change when shared/store_schema does.
CANDLE_VALUES = ["open", "high", "low", "close", "volume"]
INDICATOR_VALUES = [
    "close",
    "rsi",
    "stoch_k",
    "stoch_d",
    "stochrsi_fastk",
    "stochrsi_fastd",
    "atr",
    "volatility_ratio",
    "band_lower",
    "band_upper",
    "prev_stoch_k",
    "prev_band_lower",
    "prev_band_upper",
]


def _market_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.Column("open_time_ms", sa.BigInteger, nullable=False),
    ]


def _create_latest_index(table: str, values: list[str]) -> None:
    # INCLUDE is Postgres DDL: SQLite gets the same index without the covering columns.
    covering: dict[str, Any] = {}
    if values and op.get_context().dialect.name == "postgresql":
        covering = {"postgresql_include": ["exchange", *values]}
    op.create_index(
        f"ix_{table}_symbol_timeframe_time",
        table,
        ["symbol", "timeframe", sa.text("open_time_ms DESC")],
        **covering,
    )


def upgrade() -> None:
    op.create_table(
        "candles",
        *_market_columns(),
        *(sa.Column(name, sa.Float(53), nullable=False) for name in CANDLE_VALUES),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("stored_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "timeframe", "open_time_ms", name="pk_candles"
        ),
    )
    _create_latest_index("candles", CANDLE_VALUES)

    op.create_table(
        "indicators",
        *_market_columns(),
        *(sa.Column(name, sa.Float(53), nullable=True) for name in INDICATOR_VALUES),
        sa.Column("candle_closed_at_ms", sa.BigInteger, nullable=False),
        sa.Column("stored_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "timeframe", "open_time_ms", name="pk_indicators"
        ),
    )
    _create_latest_index("indicators", [])  # not covering: written at the full candle rate

    op.create_table(
        "signals",
        sa.Column("signal_id", sa.Text, nullable=False),
        sa.Column("strategy", sa.Text, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.Column("open_time_ms", sa.BigInteger, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("price", sa.Float(53), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("candle_closed_at_ms", sa.BigInteger, nullable=False),
        sa.Column("stored_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("signal_id", name="pk_signals"),
        sa.UniqueConstraint(
            "strategy", "exchange", "symbol", "timeframe", "open_time_ms", name="uq_signals_market"
        ),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="ck_signals_side"),
    )
    op.create_index("ix_signals_symbol_time", "signals", ["symbol", "open_time_ms"])

    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("client_order_id", sa.Text, nullable=False),
        sa.Column("signal_id", sa.Text, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("order_type", sa.Text, nullable=False),
        sa.Column("quantity", sa.Float(53), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.Column("candle_closed_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("client_order_id", name="uq_orders_client_order_id"),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="ck_orders_side"),
    )
    op.create_index("ix_orders_symbol_created", "orders", ["symbol", "created_at_ms"])
    op.create_index("ix_orders_signal_id", "orders", ["signal_id"])

    op.create_table(
        "fills",
        sa.Column("fill_id", sa.Text, nullable=False),
        sa.Column("client_order_id", sa.Text, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("price", sa.Float(53), nullable=False),
        sa.Column("quantity", sa.Float(53), nullable=False),
        sa.Column("fee", sa.Float(53), nullable=False),
        sa.Column("filled_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("fill_id", name="pk_fills"),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name="fk_fills_client_order_id_orders",
        ),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="ck_fills_side"),
    )
    op.create_index("ix_fills_symbol_filled", "fills", ["symbol", "filled_at_ms"])
    op.create_index("ix_fills_client_order_id", "fills", ["client_order_id"])

    op.create_table(
        "positions",
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("quantity", sa.Float(53), nullable=False),
        sa.Column("avg_price", sa.Float(53), nullable=False),
        sa.Column("realized_pnl", sa.Float(53), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        sa.Column("cause_fill_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", name="pk_positions"),
    )

    op.create_table(
        "decisions",
        sa.Column("signal_id", sa.Text, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("client_order_id", sa.Text, nullable=True),
        sa.Column("decided_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("signal_id", name="pk_decisions"),
        sa.CheckConstraint("outcome IN ('ordered', 'skipped')", name="ck_decisions_outcome"),
    )
    op.create_index("ix_decisions_symbol_decided", "decisions", ["symbol", "decided_at_ms"])


def downgrade() -> None:
    # Children before parents: fills reference orders.
    op.drop_index("ix_decisions_symbol_decided", table_name="decisions")
    op.drop_table("decisions")
    op.drop_table("positions")
    op.drop_index("ix_fills_client_order_id", table_name="fills")
    op.drop_index("ix_fills_symbol_filled", table_name="fills")
    op.drop_table("fills")
    op.drop_index("ix_orders_signal_id", table_name="orders")
    op.drop_index("ix_orders_symbol_created", table_name="orders")
    op.drop_table("orders")
    op.drop_index("ix_signals_symbol_time", table_name="signals")
    op.drop_table("signals")
    op.drop_index("ix_indicators_symbol_timeframe_time", table_name="indicators")
    op.drop_table("indicators")
    op.drop_index("ix_candles_symbol_timeframe_time", table_name="candles")
    op.drop_table("candles")
