"""Ingest rules: each rejection reason, de-duplication, and gaps in real candles."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from services.collector.ingest import (
    REJECTION_REASONS,
    candles_from_rows,
    dedupe,
    find_gaps,
    missing_times,
    ranges_of,
    reconcile,
    validate,
)
from shared.messages import CandleClosed
from tests.conftest import ohlcv_path

MINUTE_MS = 60_000
OPEN_TIME_MS = 1_700_000_040_000  # on the 1m grid
NOW_MS = OPEN_TIME_MS + 10 * MINUTE_MS


def candle(**changes: object) -> CandleClosed:
    """Return a valid closed 1m candle with the given fields changed."""
    valid = CandleClosed(
        exchange="binance",
        symbol="ETH/BTC",
        timeframe="1m",
        open_time_ms=OPEN_TIME_MS,
        open=10.0,
        high=12.0,
        low=9.0,
        close=11.0,
        volume=5.0,
        source="replay",
        closed_at_ms=0,
    )
    return msgspec.structs.replace(valid, **changes)


def test_valid_closed_candle_is_accepted() -> None:
    accepted, rejected = validate([candle()], now_ms=NOW_MS)

    assert accepted == [candle()]
    assert rejected == []


DEFECTS: list[tuple[dict[str, object], str]] = [
    ({"close": math.nan}, "not_finite"),
    ({"high": math.inf}, "not_finite"),
    ({"volume": math.nan}, "not_finite"),
    ({"low": 0.0}, "non_positive_price"),
    ({"open": -1.0, "low": -2.0}, "non_positive_price"),
    ({"high": 8.0, "low": 9.0, "open": 8.5, "close": 8.5}, "high_below_low"),
    ({"high": 10.5}, "high_below_open_close"),
    ({"low": 10.5}, "low_above_open_close"),
    ({"volume": -0.1}, "negative_volume"),
    ({"timeframe": "7m"}, "unknown_timeframe"),
    ({"open_time_ms": OPEN_TIME_MS + 1_000}, "off_grid"),
    ({"timeframe": "5m"}, "off_grid"),  # on the 1m grid but not on the 5m one
    ({"open_time_ms": NOW_MS + MINUTE_MS}, "in_future"),
    ({"open_time_ms": NOW_MS}, "not_closed"),  # opened just now: still forming
]


@pytest.mark.parametrize(("changes", "reason"), DEFECTS)
def test_each_defect_is_rejected_with_its_reason(changes: dict[str, object], reason: str) -> None:
    bad = candle(**changes)

    accepted, rejected = validate([candle(), bad], now_ms=NOW_MS)

    assert accepted == [candle()]
    assert [(r.candle, r.reason) for r in rejected] == [(bad, reason)]


def test_every_declared_reason_has_a_defect_that_produces_it() -> None:
    # A reason no input produces is a dead metric label; a new reason needs a case above.
    assert {reason for _changes, reason in DEFECTS} == set(REJECTION_REASONS)


def test_candle_is_closed_exactly_when_its_period_has_ended() -> None:
    last = candle(open_time_ms=NOW_MS - MINUTE_MS)

    assert validate([last], now_ms=NOW_MS) == ([last], [])
    assert validate([last], now_ms=NOW_MS - 1)[1][0].reason == "not_closed"


def test_dedupe_keeps_the_last_candle_per_market_and_open_time() -> None:
    first = candle(close=11.0)
    revised = candle(close=11.5)
    other_market = candle(symbol="XMR/BTC")
    other_exchange = candle(exchange="kraken")
    other_timeframe = candle(timeframe="5m")

    kept = dedupe([first, other_market, revised, other_exchange, other_timeframe])

    assert revised in kept and first not in kept
    assert len(kept) == 4


def test_dedupe_sorts_by_open_time_then_market() -> None:
    later = candle(open_time_ms=OPEN_TIME_MS + MINUTE_MS)
    xmr = candle(symbol="XMR/BTC")
    eth = candle(symbol="ETH/BTC")

    assert dedupe([later, xmr, eth]) == [eth, xmr, later]


def test_find_gaps_returns_inclusive_missing_ranges() -> None:
    times = [0, 60_000, 240_000, 300_000, 420_000]

    assert find_gaps(times, MINUTE_MS) == [(120_000, 180_000), (360_000, 360_000)]
    assert find_gaps(list(reversed(times)) + times, MINUTE_MS) == find_gaps(times, MINUTE_MS)
    assert find_gaps(times[:2], MINUTE_MS) == []
    assert find_gaps([], MINUTE_MS) == []


def test_find_gaps_on_illiquid_real_market_accounts_for_every_missing_minute() -> None:
    rows = json.loads(ohlcv_path("XMR_BTC-1m.json").read_bytes())
    times = [row[0] for row in rows]

    gaps = find_gaps(times, MINUTE_MS)

    # The data README counts ~1,400 gaps in this file (minutes nobody traded).
    assert 1_300 <= len(gaps) <= 1_500
    missing = sum((last - first) // MINUTE_MS + 1 for first, last in gaps)
    assert missing == (times[-1] - times[0]) // MINUTE_MS + 1 - len(set(times))
    present = set(times)
    for first, last in gaps:
        assert first - MINUTE_MS in present and last + MINUTE_MS in present
        assert not present & set(range(first, last + 1, MINUTE_MS))


def at(minute: int, **changes: object) -> CandleClosed:
    return msgspec.structs.replace(candle(open_time_ms=MINUTE_MS * minute), **changes)


def test_ccxt_rows_become_candles_and_bad_fields_become_nan_rejections() -> None:
    rows = [
        [MINUTE_MS, 1.0, 2.0, 0.5, 1.5, 10.0],
        [2 * MINUTE_MS, "1.0", None, 0.5, 1.5, 10.0],  # a null high
        [None, 1.0, 2.0, 0.5, 1.5, 10.0],  # no time: dropped
        [3 * MINUTE_MS, 1.0, 2.0],  # truncated: dropped
    ]
    made, malformed = candles_from_rows(
        rows, exchange="binance", symbol="ETH/BTC", timeframe="1m", source="binance"
    )

    assert malformed == 2
    assert [c.open_time_ms for c in made] == [MINUTE_MS, 2 * MINUTE_MS]
    assert made[0].close == 1.5 and made[1].open == 1.0
    valid, rejected = validate(made, now_ms=10 * MINUTE_MS)
    assert valid == [made[0]]
    assert [r.reason for r in rejected] == ["not_finite"]


def test_reconcile_drops_the_open_candle_sorts_and_finds_the_gap_after_the_last_stored() -> None:
    fetched = [at(12), at(10), at(14), at(12, close=10.5), at(15)]  # 15 is still open

    result = reconcile(fetched, now_ms=15 * MINUTE_MS + 30_000, last_stored_ms=8 * MINUTE_MS,
                       last_published_ms=8 * MINUTE_MS)  # fmt: skip

    assert [c.open_time_ms for c in result.stored] == [
        10 * MINUTE_MS,
        12 * MINUTE_MS,
        14 * MINUTE_MS,
    ]
    assert result.stored[1].close == 10.5  # the later of a repeated candle wins
    assert result.published == result.stored and result.late == 0
    assert result.gaps == [(9 * MINUTE_MS, 9 * MINUTE_MS), (11 * MINUTE_MS, 11 * MINUTE_MS),
                           (13 * MINUTE_MS, 13 * MINUTE_MS)]  # fmt: skip
    assert [r.reason for r in result.rejected] == ["not_closed"]


def test_reconcile_stores_but_does_not_publish_candles_before_the_last_published() -> None:
    fetched = [at(5, close=10.2), at(6), at(7)]  # 5 revised, 6 filled late, 7 new

    result = reconcile(fetched, now_ms=20 * MINUTE_MS, last_stored_ms=6 * MINUTE_MS,
                       last_published_ms=6 * MINUTE_MS)  # fmt: skip

    assert len(result.stored) == 3
    assert [c.open_time_ms for c in result.published] == [7 * MINUTE_MS]
    assert result.late == 2
    assert result.gaps == []


def test_missing_times_and_their_runs() -> None:
    missing = missing_times(
        MINUTE_MS, 9 * MINUTE_MS, MINUTE_MS, [2 * MINUTE_MS, 3 * MINUTE_MS, 7 * MINUTE_MS]
    )

    assert missing == [MINUTE_MS * m for m in (1, 4, 5, 6, 8, 9)]
    assert ranges_of(missing, MINUTE_MS) == [
        (MINUTE_MS, MINUTE_MS),
        (4 * MINUTE_MS, 6 * MINUTE_MS),
        (8 * MINUTE_MS, 9 * MINUTE_MS),
    ]
