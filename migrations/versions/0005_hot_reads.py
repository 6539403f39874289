"""Hot reads: keep the latest candles and indicators readable from their indexes alone.

The covering index of 0001 (`symbol, timeframe, open_time_ms DESC INCLUDE exchange and the
prices`) lets "the latest N candles of a market" be an index-only scan, but only over heap pages
the visibility map marks all-visible. Candles arrive in time order, so the newest rows, the ones
every chart asks for, sit on the newest pages: exactly those that autovacuum, triggered by default
after 20% of the table was inserted, has not reached yet. Each of them then costs a heap fetch,
one page per candle. Vacuuming after a fixed number of inserted rows instead keeps the
newest pages visible, and the read index-only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# Rows inserted before autovacuum runs on the table: a minute of candles at 1,000 markets.
INSERT_THRESHOLD = 50_000
TABLES = ("candles", "indicators")


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # storage parameters are Postgres DDL; SQLite has no autovacuum
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_insert_scale_factor = 0, "
            f"autovacuum_vacuum_insert_threshold = {INSERT_THRESHOLD})"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} RESET (autovacuum_vacuum_insert_scale_factor, "
            "autovacuum_vacuum_insert_threshold)"
        )
