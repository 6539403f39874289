"""Ingest rules (pure): raw CandleClosed batches in -> valid, de-duplicated candles and gaps out."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

from shared.messages import TIMEFRAME_MS, CandleClosed

RejectionReason: TypeAlias = Literal[
    "not_finite",
    "non_positive_price",
    "high_below_low",
    "high_below_open_close",
    "low_above_open_close",
    "negative_volume",
    "unknown_timeframe",
    "off_grid",
    "in_future",
    "not_closed",
]
REJECTION_REASONS: Final[tuple[RejectionReason, ...]] = get_args(RejectionReason)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A candle that failed validation, with one low-cardinality reason (a metric label)."""

    candle: CandleClosed
    reason: RejectionReason


def rejection_reason(candle: CandleClosed, *, now_ms: int) -> RejectionReason | None:
    """Return why the candle must not be published, or None if it is a valid closed candle."""
    prices = (candle.open, candle.high, candle.low, candle.close)
    if not all(math.isfinite(value) for value in (*prices, candle.volume)):
        return "not_finite"
    if min(prices) <= 0:
        return "non_positive_price"
    if candle.high < candle.low:
        return "high_below_low"
    if candle.high < max(candle.open, candle.close):
        return "high_below_open_close"
    if candle.low > min(candle.open, candle.close):
        return "low_above_open_close"
    if candle.volume < 0:
        return "negative_volume"
    timeframe_ms = TIMEFRAME_MS.get(candle.timeframe)
    if timeframe_ms is None:
        return "unknown_timeframe"
    if candle.open_time_ms % timeframe_ms != 0:
        return "off_grid"
    # A candle that has not even opened is a clock or source bug, not merely early: keep the
    # two apart so the metric tells them apart.
    if candle.open_time_ms > now_ms:
        return "in_future"
    if candle.open_time_ms + timeframe_ms > now_ms:
        return "not_closed"
    return None


def validate(
    candles: Sequence[CandleClosed], *, now_ms: int
) -> tuple[list[CandleClosed], list[Rejection]]:
    """Split candles into the valid closed ones and the rejections, keeping the input order."""
    accepted: list[CandleClosed] = []
    rejected: list[Rejection] = []
    for candle in candles:
        reason = rejection_reason(candle, now_ms=now_ms)
        if reason is None:
            accepted.append(candle)
        else:
            rejected.append(Rejection(candle, reason))
    return accepted, rejected


def dedupe(candles: Iterable[CandleClosed]) -> list[CandleClosed]:
    """Keep one candle per market and open time (the last one wins), sorted by time then market."""
    latest: dict[tuple[str, str, str, int], CandleClosed] = {}
    for candle in candles:
        latest[(candle.exchange, candle.symbol, candle.timeframe, candle.open_time_ms)] = candle
    return sorted(latest.values(), key=lambda candle: (candle.open_time_ms, candle.key))


def find_gaps(times_ms: Sequence[int], timeframe_ms: int) -> list[tuple[int, int]]:
    """Return the missing open times of one market as inclusive (first, last) ranges."""
    if timeframe_ms <= 0:
        raise ValueError(f"timeframe_ms must be positive, got {timeframe_ms}")
    ordered = sorted(set(times_ms))
    return [
        (before + timeframe_ms, after - timeframe_ms)
        for before, after in itertools.pairwise(ordered)
        if after - before > timeframe_ms
    ]
