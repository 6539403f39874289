"""Typed settings read from the environment (and `.env`), validated once at start."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every service shares; each service subclasses this next to its code."""

    # An empty variable counts as unset: compose passes `${API_KEY:-}` as "" when it is not set.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    log_level: str = "INFO"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 disables /metrics")
    consumer_name: str = Field(default_factory=socket.gethostname)

    # bus
    batch_size: int = Field(default=500, ge=1, le=100_000)
    block_ms: int = Field(default=1_000, ge=1, le=60_000)
    claim_idle_ms: int = Field(default=30_000, ge=100)
    max_deliveries: int = Field(default=5, ge=1)
    stream_retain_entries: int = Field(
        default=100_000, ge=1_000, description="entries kept after every group has read them"
    )
    stream_retain_ticks: int = Field(
        default=1_000,
        ge=1,
        description="the same for the ticks stream, whose every entry is a whole batch of candles",
    )

    # database pool
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_recycle_s: int = Field(default=1_800, ge=1)
    db_pool_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "memory://")):
            raise ValueError("redis_url must start with redis://, rediss://, unix:// or memory://")
        return value


def secrets_of(settings: BaseSettings) -> list[str]:
    """Return every secret a log line must never show: SecretStr values (alone or in lists),
    and the passwords inside URL settings (postgresql://user:password@host,
    http://user:password@proxy)."""
    found: list[str] = []
    for value in settings.model_dump().values():
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, list | tuple):  # e.g. several API tokens
            found.extend(v.get_secret_value() for v in value if isinstance(v, SecretStr))
        elif isinstance(value, str) and "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                continue
            if password:
                found.append(password)
    return [secret for secret in found if secret]
