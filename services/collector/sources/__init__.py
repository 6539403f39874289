"""Candle sources (I/O): replay files or a synthetic market in -> batches of CandleClosed out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol, TypeAlias

from services.collector.settings import CollectorSettings
from services.collector.sources.replay import (
    REPLAY_EXCHANGE,
    ReplayFileError,
    ReplaySource,
    Row,
    parse_file_name,
    read_rows,
)
from services.collector.sources.synthetic import SYNTHETIC_EXCHANGE, SyntheticSource
from shared.messages import CandleClosed

__all__ = [
    "REPLAY_EXCHANGE",
    "SYNTHETIC_EXCHANGE",
    "CandleSource",
    "Market",
    "ReplayFileError",
    "ReplaySource",
    "Row",
    "SyntheticSource",
    "parse_file_name",
    "read_rows",
    "source_from_settings",
]

Market: TypeAlias = tuple[str, str, str]  # (exchange, symbol, timeframe)


class CandleSource(Protocol):
    """Where closed candles come from; the collector validates, stores and publishes them."""

    name: str

    def markets(self) -> list[Market]:
        """Return the (exchange, symbol, timeframe) markets this source produces."""
        ...

    def now_ms(self) -> int:
        """Return the source's clock, which decides whether a candle has closed yet."""
        ...

    def batches(self, resume_after: Mapping[Market, int]) -> AsyncIterator[list[CandleClosed]]:
        """Yield closed candles, skipping each market's candles at or before its resume time."""
        ...


def source_from_settings(settings: CollectorSettings) -> CandleSource:
    """Build the candle source the settings choose."""
    if settings.source == "replay":
        return ReplaySource(
            settings.replay_files,
            exchange=settings.exchange or REPLAY_EXCHANGE,
            speed=settings.replay_speed,
            batch_size=settings.batch_size,
        )
    return SyntheticSource(
        symbols=settings.synthetic_symbols,
        timeframe=settings.timeframe,
        seed=settings.synthetic_seed,
        candle_interval_s=settings.candle_interval_s,
        start_ms=settings.synthetic_start_ms,
        exchange=settings.exchange or SYNTHETIC_EXCHANGE,
    )
