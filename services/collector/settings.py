"""Collector settings: environment variables in -> a validated CollectorSettings out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.messages import TIMEFRAME_MS
from shared.settings import CommonSettings


class CollectorSettings(CommonSettings):
    """Which candle source the collector reads, and how fast."""

    source: Literal["replay", "synthetic", "exchange"] = "synthetic"
    # NoDecode: the environment gives "a.json,b.csv", not the JSON list pydantic-settings expects.
    replay_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    replay_speed: float = Field(
        default=0.0, ge=0, description="market seconds per wall-clock second; 0: no pacing"
    )
    synthetic_symbols: int = Field(default=20, ge=1, le=10_000)
    synthetic_seed: int = 7
    synthetic_start_ms: int | None = Field(
        default=None, ge=0, description="first synthetic open time; None: a recent aligned time"
    )
    candle_interval_s: float = Field(
        default=1.0, ge=0, description="wall-clock seconds between synthetic candles; 0: no pause"
    )
    exchange: str | None = Field(
        default=None, min_length=1, description="None: the source's own (binance, synthetic)"
    )
    timeframe: str = Field(default="1m", description="synthetic candles' timeframe")
    republish_limit: int = Field(
        default=10_000, ge=0, description="stored-but-unpublished candles republished per market"
    )

    # --- source=exchange: any ccxt exchange (`exchange`, default binance) ---------------------
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTC/USDT"], description="ccxt unified symbols, comma-separated"
    )
    timeframes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["1m"])
    api_url: str | None = Field(
        default=None, description="base URL replacing the exchange's REST host (proxy, testnet)"
    )
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    fallback_exchange: str | None = Field(
        default=None, description="a second ccxt exchange that serves while the first is down"
    )
    fallback_api_url: str | None = Field(
        default=None, description="a second endpoint (of the fallback, else of the exchange)"
    )
    backfill_hours: float = Field(default=24.0, ge=0, le=24 * 365)
    weight_budget_per_min: float = Field(
        default=1_200.0,
        gt=0,
        description="request weight per minute for one exchange (Binance allows 6,000)",
    )
    max_concurrency: int = Field(default=8, ge=1, le=256)
    request_timeout_ms: int = Field(default=10_000, ge=100)
    settle_ms: int = Field(
        default=2_000, ge=0, description="how long after a candle's close it is asked for"
    )
    clock_tolerance_ms: int = Field(
        default=1_000, ge=0, description="a candle counts as closed this long after its end"
    )
    page_limit: int = Field(default=1_000, ge=1, le=5_000, description="candles per request")
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_cap_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=6, ge=1, description="tries per request before it waits")
    gap_retries: int = Field(
        default=3, ge=1, description="fetches of a missing range before it counts as no-trade"
    )
    recheck_candles: int = Field(
        default=0,
        ge=0,
        le=10,
        description="stored candles each poll asks for again, to catch an exchange's late "
        "revisions (0: only new candles)",
    )
    stream: bool = Field(
        default=False,
        description="listen to the exchange's WebSocket kline stream where ccxt has one; REST "
        "backfills, fills gaps and takes over when the stream stalls",
    )
    stream_grace_ms: int = Field(
        default=10_000, ge=0, description="how long REST waits for the stream after a close"
    )
    calendar: str = Field(default="24/7", description="trading hours: 24/7 or XNYS, XLON, ...")
    symbol_calendars: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="per-symbol calendars: AAPL/USD=XNYS,..."
    )
    clock_start_ms: int | None = Field(
        default=None, ge=0, description="simulated market time at clock_anchor_s (replays)"
    )
    clock_anchor_s: float | None = Field(default=None, description="wall time of clock_start_ms")
    clock_speed: float = Field(default=1.0, gt=0, description="simulated seconds per second")

    @field_validator("replay_files", "symbols", "timeframes", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("replay_files")
    @classmethod
    def _files_exist(cls, paths: list[Path]) -> list[Path]:
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            raise ValueError(f"replay files not found: {', '.join(missing)}")
        return paths

    @field_validator("symbol_calendars", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [part.strip() for part in value.split(",") if part.strip()]
            if any("=" not in pair for pair in pairs):
                raise ValueError("symbol_calendars must look like AAPL/USD=XNYS,MSFT/USD=XNYS")
            return dict(pair.split("=", 1) for pair in pairs)
        return value

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        if value not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {value!r}, expected one of {list(TIMEFRAME_MS)}")
        return value

    @field_validator("timeframes")
    @classmethod
    def _known_timeframes(cls, values: list[str]) -> list[str]:
        for value in values:
            cls._known_timeframe(value)
        return values

    @field_validator("symbols")
    @classmethod
    def _unified_symbols(cls, values: list[str]) -> list[str]:
        bad = [value for value in values if "/" not in value]
        if bad:
            raise ValueError(f"symbols must be ccxt unified symbols like BTC/USDT, got {bad}")
        return values

    @model_validator(mode="after")
    def _replay_needs_files(self) -> Self:
        if self.source == "replay" and not self.replay_files:
            raise ValueError("source=replay needs REPLAY_FILES (comma-separated .json/.csv paths)")
        return self
