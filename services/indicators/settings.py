"""Settings of the indicators service."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class IndicatorsSettings(CommonSettings):
    """Indicators: how much stored history restores each market's state at start."""

    metrics_port: int = Field(default=9102, ge=0, le=65535)
    warmup_candles: int = Field(
        default=2_000,
        ge=100,
        description="stored candles per market replayed at start; Wilder smoothing forgets its "
        "seed as (13/14)^n, so 2,000 candles restore state to far below 1e-12",
    )
    warmup_markets_per_query: int = Field(default=200, ge=1)
    batch_size: int = Field(
        default=5_000,
        ge=1,
        le=100_000,
        description="candles per read: larger batches amortise"
        " each round trip when a backlog builds; a quiet stream still yields at once",
    )
