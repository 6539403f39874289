"""Settings of the executor service."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class ExecutorSettings(CommonSettings):
    """Executor: order sizing and the paper broker's costs."""

    metrics_port: int = Field(default=9104, ge=0, le=65535)
    order_quote_amount: float = Field(
        default=1.0, gt=0, description="quote currency spent on each entry (fixed-amount sizing)"
    )
    slippage_bps: float = Field(default=5.0, ge=0, le=1_000)
    fee_bps: float = Field(default=10.0, ge=0, le=1_000)
