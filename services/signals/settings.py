"""Settings of the signals service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings


class SignalsSettings(CommonSettings):
    """Signals: which strategy turns indicators into signals."""

    metrics_port: int = Field(default=9103, ge=0, le=65535)
    strategy: str = "stochrsi_bands"
    strategy_config: Path | None = Field(
        default=None,
        description="JSON or TOML file of strategy parameters, read again when it changes",
    )
    min_price_move_pct: float = Field(
        default=0.0,
        ge=0,
        description="skip candles whose close moved less than this (percent); 0: never skip a "
        "candle that could cross a band",
    )
    history: int = Field(default=50, ge=1, le=10_000, description="messages kept per symbol")
