"""Ingest rules (pure): raw CandleClosed batches in -> valid, de-duplicated candles and gaps out."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

import msgspec

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
    # A candle a whole period ahead of our clock is a clock or source bug, not merely early
    # (the exchange's clock may run a little ahead of ours): keep the two apart in the metric.
    if candle.open_time_ms >= now_ms + timeframe_ms:
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


def candles_from_rows(
    rows: Iterable[Sequence[object]], *, exchange: str, symbol: str, timeframe: str, source: str
) -> tuple[list[CandleClosed], int]:
    """Turn ccxt OHLCV rows ([open ms, open, high, low, close, volume]) into candles.

    A missing or non-numeric price or volume becomes NaN, which validation rejects with a
    reason; a row without a usable time is dropped and counted (second value returned).
    """
    out: list[CandleClosed] = []
    malformed = 0
    for row in rows:
        if len(row) < 6 or not isinstance(row[0], int | float) or isinstance(row[0], bool):
            malformed += 1
            continue
        values = [_number(value) for value in row[1:6]]
        out.append(
            CandleClosed(
                exchange=exchange,
                symbol=symbol,
                timeframe=timeframe,
                open_time_ms=int(row[0]),
                open=values[0],
                high=values[1],
                low=values[2],
                close=values[3],
                volume=values[4],
                source=source,
                closed_at_ms=0,
            )
        )
    return out, malformed


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


@dataclass(frozen=True, slots=True)
class Reconciled:
    """One market's fetched candles, sorted out against what is stored and published.

    `stored`: every valid closed candle, one per open time, ascending (new, revised or
    unchanged: the store tells them apart). `published`: those newer than the last published
    candle, to publish in order. `late`: valid candles at or before the last published one,
    stored but never republished (consumers already moved past them). `gaps`: missing ranges
    between the last stored candle and the newest fetched one, inclusive open times.
    """

    stored: list[CandleClosed]
    published: list[CandleClosed]
    late: int
    gaps: list[tuple[int, int]]
    rejected: list[Rejection]


def reconcile(
    candles: Sequence[CandleClosed],
    *,
    now_ms: int,
    last_stored_ms: int | None,
    last_published_ms: int | None,
) -> Reconciled:
    """Validate one market's fetched candles and decide what is stored, published and missing.

    Rules: invalid candles and the still-open one are rejected (see `rejection_reason`); of a
    repeated open time the last one wins; out-of-order candles are sorted; a candle at or
    before the last published one is stored (it may be a revision) but not published.
    """
    valid, rejected = validate(candles, now_ms=now_ms)
    ordered = dedupe(valid)
    if ordered:
        timeframe_ms = TIMEFRAME_MS[ordered[0].timeframe]
        anchor = [] if last_stored_ms is None else [last_stored_ms]
        times = [c.open_time_ms for c in ordered]
        gaps = [
            gap
            for gap in find_gaps(anchor + times, timeframe_ms)
            if last_stored_ms is None or gap[0] > last_stored_ms
        ]
    else:
        gaps = []
    floor = -1 if last_published_ms is None else last_published_ms
    published = [c for c in ordered if c.open_time_ms > floor]
    return Reconciled(
        stored=ordered,
        published=published,
        late=len(ordered) - len(published),
        gaps=gaps,
        rejected=rejected,
    )


def missing_times(first_ms: int, last_ms: int, timeframe_ms: int, have: Iterable[int]) -> list[int]:
    """Return the open times in [first_ms, last_ms] (on the grid) that are not in `have`."""
    present = set(have)
    return [t for t in range(first_ms, last_ms + 1, timeframe_ms) if t not in present]


def ranges_of(times: Sequence[int], timeframe_ms: int) -> list[tuple[int, int]]:
    """Group ascending open times into inclusive (first, last) runs of consecutive candles."""
    runs: list[tuple[int, int]] = []
    for t in times:
        if runs and t == runs[-1][1] + timeframe_ms:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


def stamped(candles: Sequence[CandleClosed], now_ms: int) -> list[CandleClosed]:
    """Return copies carrying their publication time, where end-to-end latency starts."""
    return [msgspec.structs.replace(candle, closed_at_ms=now_ms) for candle in candles]
