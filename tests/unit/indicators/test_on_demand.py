"""On-demand indicators of stored candles: exact against the full history, and an LRU+TTL cache."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import REGISTRY

from services.indicators.engine import IndicatorParams, compute_frame
from services.indicators.on_demand import (
    Frame,
    FrameKey,
    IndicatorCache,
    compute_stored,
    warm_up_history,
)
from shared.messages import CandleClosed
from shared.store import Store, create_engine, upgrade
from tests.conftest import ohlcv_path


class MarketArgs(TypedDict):
    exchange: str
    symbol: str
    timeframe: str


class RangeArgs(TypedDict):
    start_ms: int
    end_ms: int
    limit: int


MARKET = MarketArgs(exchange="binance", symbol="XMR/BTC", timeframe="1m")
MINUTE_MS = 60_000
CUSTOM = IndicatorParams(
    rsi_period=6,
    stoch_period=9,
    stoch_k_period=2,
    stochrsi_fastk_period=5,
    atr_period=7,
    atr_ma_period=12,
    sensitivity=1.1,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def cache_count(result: str) -> float:
    value = REGISTRY.get_sample_value("candlebus_indicator_cache_total", {"result": result})
    return value or 0.0


def candles_of(rows: npt.NDArray[np.float64]) -> list[CandleClosed]:
    return [
        CandleClosed(
            **MARKET,
            open_time_ms=int(row[0]),
            open=row[1],
            high=row[2],
            low=row[3],
            close=row[4],
            volume=row[5],
            source="replay",
            closed_at_ms=0,
        )
        for row in rows.tolist()
    ]


def new_store(path: Path) -> Store:
    url = f"sqlite:///{path}"
    upgrade(url)
    return Store(create_engine(url))


@pytest.fixture(scope="module")
def xmr_rows() -> npt.NDArray[np.float64]:
    """Real 1m candles with about 1,400 gaps, so the warm-up history has filled candles too."""
    path = ohlcv_path("XMR_BTC-1m.json")
    return np.array(json.loads(path.read_text()), dtype=np.float64)


@pytest.fixture(scope="module")
def xmr_store(
    tmp_path_factory: pytest.TempPathFactory, xmr_rows: npt.NDArray[np.float64]
) -> Iterator[Store]:
    """Every XMR/BTC candle in a SQLite store; read-only for the tests that share it."""
    store = new_store(tmp_path_factory.mktemp("on_demand") / "store.db")
    asyncio.run(store.save_candles(candles_of(xmr_rows)))
    yield store
    store.engine.dispose()


def full_history(
    rows: npt.NDArray[np.float64], params: IndicatorParams
) -> dict[str, npt.NDArray[np.float64]]:
    """Compute over every stored candle: what an on-demand range must reproduce."""
    times = rows[:, 0].astype(np.int64)
    return compute_frame(
        times, rows[:, 2], rows[:, 3], rows[:, 4], timeframe_ms=MINUTE_MS, params=params
    )


def assert_frame_close(frame: Frame, expected: Frame, selected: npt.NDArray[np.bool_]) -> None:
    assert set(frame) == set(expected)
    for name, column in expected.items():
        np.testing.assert_allclose(
            frame[name], column[selected], rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name
        )


@pytest.mark.parametrize("params", [IndicatorParams(), CUSTOM], ids=["default", "custom"])
@pytest.mark.parametrize(
    ("start_index", "end_index", "limit"),
    [(0, 300, 1_000), (6_000, 6_400, 1_000), (9_000, None, 250), (None, None, 500)],
    ids=["first-candles", "middle-range", "first-limit-from-start", "latest-limit"],
)
async def test_range_equals_the_full_history_computation(
    xmr_store: Store,
    xmr_rows: npt.NDArray[np.float64],
    params: IndicatorParams,
    start_index: int | None,
    end_index: int | None,
    limit: int,
) -> None:
    times = xmr_rows[:, 0].astype(np.int64)
    start_ms = None if start_index is None else int(times[start_index])
    end_ms = None if end_index is None else int(times[end_index])

    frame = await compute_stored(
        xmr_store,
        IndicatorCache(),
        **MARKET,
        params=params,
        start_ms=start_ms,
        end_ms=end_ms,
        limit=limit,
    )

    in_range = np.ones(times.size, dtype=bool)
    if start_ms is not None:
        in_range &= times >= start_ms
    if end_ms is not None:
        in_range &= times <= end_ms
    selected = np.zeros(times.size, dtype=bool)
    picked = np.flatnonzero(in_range)
    selected[picked[:limit] if start_ms is not None else picked[-limit:]] = True
    assert frame["open_time_ms"].size == selected.sum()
    assert_frame_close(frame, full_history(xmr_rows, params), selected)


async def test_the_range_alone_without_warm_up_history_would_not_match(
    xmr_rows: npt.NDArray[np.float64],
) -> None:
    # The reason compute_stored loads earlier candles: without them RSI and ATR start cold.
    expected = full_history(xmr_rows, IndicatorParams())
    alone = full_history(xmr_rows[6_000:6_401], IndicatorParams())

    difference = np.nanmax(np.abs(alone["rsi"] - expected["rsi"][6_000:6_401]))

    assert difference > 1e-3


async def test_repeated_request_is_a_hit_returning_the_cached_read_only_arrays(
    xmr_store: Store,
) -> None:
    cache = IndicatorCache()
    hits, misses = cache_count("hit"), cache_count("miss")

    first = await compute_stored(xmr_store, cache, **MARKET, params=CUSTOM, limit=300)
    assert (cache_count("hit") - hits, cache_count("miss") - misses) == (0, 1)
    second = await compute_stored(xmr_store, cache, **MARKET, params=CUSTOM, limit=300)

    assert (cache_count("hit") - hits, cache_count("miss") - misses) == (1, 1)
    assert second is first
    with pytest.raises(ValueError, match="read-only"):
        second["rsi"][0] = 0.0


async def test_other_parameters_or_range_are_separate_entries(xmr_store: Store) -> None:
    cache = IndicatorCache()
    misses = cache_count("miss")

    default = await compute_stored(xmr_store, cache, **MARKET, params=IndicatorParams(), limit=300)
    custom = await compute_stored(xmr_store, cache, **MARKET, params=CUSTOM, limit=300)
    shorter = await compute_stored(xmr_store, cache, **MARKET, params=CUSTOM, limit=200)

    assert cache_count("miss") - misses == 3
    assert len(cache) == 3
    assert not np.allclose(default["rsi"], custom["rsi"])
    np.testing.assert_array_equal(shorter["rsi"], custom["rsi"][-200:])


async def test_entry_expires_after_its_ttl(xmr_store: Store) -> None:
    clock = FakeClock()
    cache = IndicatorCache(ttl_s=10.0, clock=clock)
    first = await compute_stored(xmr_store, cache, **MARKET, params=CUSTOM, limit=300)
    hits, misses = cache_count("hit"), cache_count("miss")

    clock.now += 9.9
    still_cached = await compute_stored(xmr_store, cache, **MARKET, params=CUSTOM, limit=300)
    clock.now += 0.1
    expired = await compute_stored(xmr_store, cache, **MARKET, params=CUSTOM, limit=300)

    assert (cache_count("hit") - hits, cache_count("miss") - misses) == (1, 1)
    assert still_cached is first
    assert expired is not first
    np.testing.assert_array_equal(expired["rsi"], first["rsi"])


def key(start_ms: int) -> FrameKey:
    return FrameKey(
        **MARKET, params=CUSTOM, start_ms=start_ms, end_ms=None, limit=10, last_open_time_ms=0
    )


def test_least_recently_used_entry_is_evicted_first() -> None:
    cache = IndicatorCache(max_entries=2)
    frames = {start: {"close": np.array([float(start)])} for start in (1, 2, 3)}
    cache.put(key(1), frames[1])
    cache.put(key(2), frames[2])

    assert cache.get(key(1)) is frames[1]  # 1 is now more recent than 2
    cache.put(key(3), frames[3])

    assert len(cache) == 2
    assert cache.get(key(2)) is None
    assert cache.get(key(1)) is frames[1]
    assert cache.get(key(3)) is frames[3]


async def test_a_new_candle_invalidates_cached_results(
    tmp_path: Path, xmr_rows: npt.NDArray[np.float64]
) -> None:
    rows = xmr_rows[:1_500]
    store = new_store(tmp_path / "store.db")
    await store.save_candles(candles_of(rows[:-1]))
    cache = IndicatorCache()
    fixed = RangeArgs(start_ms=int(rows[1_200, 0]), end_ms=int(rows[1_300, 0]), limit=1_000)
    latest_before = await compute_stored(store, cache, **MARKET, params=CUSTOM, limit=100)
    fixed_before = await compute_stored(store, cache, **MARKET, params=CUSTOM, **fixed)
    misses = cache_count("miss")

    await store.save_candles(candles_of(rows[-1:]))
    latest_after = await compute_stored(store, cache, **MARKET, params=CUSTOM, limit=100)
    fixed_after = await compute_stored(store, cache, **MARKET, params=CUSTOM, **fixed)

    assert cache_count("miss") - misses == 2
    assert latest_after["open_time_ms"][-1] == rows[-1, 0]
    np.testing.assert_array_equal(
        latest_after["open_time_ms"][:-1], latest_before["open_time_ms"][1:]
    )
    np.testing.assert_array_equal(fixed_after["rsi"], fixed_before["rsi"])
    store.engine.dispose()


async def test_a_market_without_candles_gives_empty_columns(xmr_store: Store) -> None:
    frame = await compute_stored(
        xmr_store,
        IndicatorCache(),
        **MarketArgs(exchange="binance", symbol="ETH/BTC", timeframe="1m"),
        params=CUSTOM,
        limit=10,
    )

    assert "band_upper" in frame
    assert all(column.size == 0 for column in frame.values())


def test_warm_up_history_is_ten_longest_periods_and_never_below_1000() -> None:
    assert warm_up_history(IndicatorParams()) == 1_000
    assert warm_up_history(IndicatorParams(atr_ma_period=150)) == 1_500


def test_cache_rejects_nonsense_sizes() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        IndicatorCache(max_entries=0)
    with pytest.raises(ValueError, match="ttl_s"):
        IndicatorCache(ttl_s=0.0)


async def test_unknown_timeframe_is_rejected(xmr_store: Store) -> None:
    with pytest.raises(ValueError, match="unknown timeframe '7m'"):
        await compute_stored(
            xmr_store,
            IndicatorCache(),
            **MarketArgs(exchange="binance", symbol="XMR/BTC", timeframe="7m"),
            params=CUSTOM,
            limit=10,
        )
