"""Collector settings: environment variables in -> a validated CollectorSettings out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.messages import TIMEFRAME_MS
from shared.settings import CommonSettings


class CollectorSettings(CommonSettings):
    """Which candle source the collector reads, and how fast."""

    source: Literal["replay", "synthetic"] = "synthetic"
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

    @field_validator("replay_files", mode="before")
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

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        if value not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {value!r}, expected one of {list(TIMEFRAME_MS)}")
        return value

    @model_validator(mode="after")
    def _replay_needs_files(self) -> Self:
        if self.source == "replay" and not self.replay_files:
            raise ValueError("source=replay needs REPLAY_FILES (comma-separated .json/.csv paths)")
        return self
