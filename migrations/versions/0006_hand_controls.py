"""Hand controls beyond the kill switch: paused symbols, requests to close a position, and the
strategy parameters set through the API.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "symbol_controls",
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", "symbol", name="pk_symbol_controls"),
    )
    op.create_table(
        "close_requests",
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("requested_at_ms", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("done_at_ms", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("account", "symbol", "requested_at_ms", name="pk_close_requests"),
    )
    op.create_table(
        "strategy_params",
        sa.Column("strategy", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("strategy", name="pk_strategy_params"),
    )


def downgrade() -> None:
    op.drop_table("strategy_params")
    op.drop_table("close_requests")
    op.drop_table("symbol_controls")
