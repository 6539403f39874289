"""Gateway settings: environment variables in -> a validated GatewaySettings out."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings


class GatewaySettings(CommonSettings):
    """Where the gateway listens and how much it buffers for each WebSocket client."""

    # The one image runs in compose, where the published port is the boundary, so listen on
    # every interface by default; set HOST=127.0.0.1 to keep it local.
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    metrics_port: int = Field(default=9105, ge=0, le=65535)
    ws_queue_size: int = Field(
        default=10_000, ge=1, le=1_000_000, description="events buffered per client before drop"
    )
    ws_ping_interval_s: float = Field(
        default=20.0, gt=0, description="server pings so dead peers are noticed and closed"
    )
    ws_max_channels: int = Field(
        default=100, ge=1, le=10_000, description="subscriptions one connection may hold"
    )
    # NoDecode: the environment gives "https://a.example,https://b.example", not a JSON list.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
