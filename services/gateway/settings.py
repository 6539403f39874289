"""Gateway settings: environment variables in -> a validated GatewaySettings out."""

from __future__ import annotations

from typing import Annotated, Final, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.gateway.auth import is_hashed
from shared.settings import CommonSettings

MIN_TOKEN_CHARS: Final = 24
# Words of the placeholders people copy from examples; a token containing one is refused.
PLACEHOLDER_WORDS: Final = (
    "changeme", "change-me", "change_me", "example", "default", "placeholder", "password",
    "secret",
)  # fmt: skip


def _split_comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_token(entry: str) -> str | None:
    """Return why a configured token (or `sha256:` hash) is refused, or None if it is fine."""
    if is_hashed(entry):
        return None
    if len(entry) < MIN_TOKEN_CHARS:
        return f"is shorter than {MIN_TOKEN_CHARS} characters"
    if any(word in entry.lower() for word in PLACEHOLDER_WORDS):
        return "looks like a placeholder (change-me, example, default, secret, ...)"
    if len(set(entry)) < 8:
        return "has fewer than 8 different characters"
    return None


class GatewaySettings(CommonSettings):
    """Where the gateway listens, who may call it, and how much it buffers per WebSocket client."""

    # A refused setting is reported without its value: it may be a token.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

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
    ws_flush_ms: float = Field(
        default=5.0, gt=0, le=1_000, description="events arriving this close share one frame"
    )
    ws_batch_max: int = Field(
        default=200, ge=1, le=10_000, description="events per frame; a full batch is sent at once"
    )
    ws_heartbeat_s: float = Field(
        default=5.0, gt=0, le=300, description="heartbeat frames the page watches for a dead link"
    )
    ws_compression: bool = Field(
        default=True, description="permessage-deflate on frames, when the client offers it"
    )
    ws_resume_page: int = Field(
        default=500, ge=1, le=10_000, description="entries per read when a client resumes"
    )
    # NoDecode: the environment gives "https://a.example,https://b.example", not a JSON list.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    account: str = Field(
        default="paper", min_length=1, description="the executor's ACCOUNT the controls are for"
    )

    # API tokens, comma-separated; each entry is a token (make one with
    # `python -c "import secrets; print(secrets.token_urlsafe(32))"`) or its `sha256:<hex>` hash.
    # At least one admin token is required: the gateway refuses to start without it.
    api_tokens_read: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_tokens_admin: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # abuse limits (per replica: see ratelimit.py)
    rate_limit_per_s: float = Field(
        default=50.0, ge=0, description="requests per second per token or address; 0: no limit"
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="requests allowed at once")
    max_request_bytes: int = Field(
        default=65_536, ge=1_024, description="larger request bodies are refused with 413"
    )

    # response cache (in process, and in Redis when the bus is Redis)
    cache_enabled: bool = True
    cache_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="response bodies kept in process"
    )

    # readiness
    ready_max_lag_entries: int = Field(
        default=10_000, ge=0, description="a consumer group further behind makes /ready 503"
    )
    ready_timeout_s: float = Field(default=2.0, gt=0, le=30, description="per check of /ready")

    @field_validator("cors_origins", "api_tokens_read", "api_tokens_admin", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_comma_list(value)

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_origin(cls, value: list[str]) -> list[str]:
        # Browsers send the token in an Authorization header: only listed origins may.
        if "*" in value:
            raise ValueError("CORS_ORIGINS must list origins; '*' is not allowed")
        return value

    @model_validator(mode="after")
    def _tokens_set_and_strong(self) -> Self:
        if not self.api_tokens_admin:
            raise ValueError(
                "API_TOKENS_ADMIN is empty: set at least one admin token (see docs/gateway.md)"
            )
        for name, tokens in (
            ("API_TOKENS_READ", self.api_tokens_read),
            ("API_TOKENS_ADMIN", self.api_tokens_admin),
        ):
            for number, token in enumerate(tokens, start=1):
                reason = check_token(token.get_secret_value())
                if reason is not None:
                    raise ValueError(f"{name}: token {number} {reason}")
        return self
