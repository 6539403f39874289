"""Settings of the signals service."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class SignalsSettings(CommonSettings):
    """Signals: which strategy turns indicators into signals."""

    metrics_port: int = Field(default=9103, ge=0, le=65535)
    strategy: str = "stochrsi_bands"
