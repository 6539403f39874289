"""Store behaviours both dialects must show, written once: a Store in, assertions out."""

from __future__ import annotations

import msgspec

from shared.store import GapRow, Store
from tests.fakes import candle

MINUTE = 60_000


async def check_revised_candles_replace_stored_ones(store: Store) -> None:
    """A candle stored again with other values replaces the stored one; an identical one is
    neither inserted nor counted; new ones are inserted."""
    first = [candle(open_time_ms=MINUTE * i) for i in range(1, 61)]
    assert await store.upsert_candles(first) == (60, 0)
    assert await store.upsert_candles(first) == (0, 0)

    revised = msgspec.structs.replace(first[9], close=0.0893, high=0.0895, volume=99.0)
    batch = [*first[:9], revised, candle(open_time_ms=MINUTE * 61)]
    assert await store.upsert_candles(batch) == (1, 1)

    rows = await store.candles_between(symbol="ETH/BTC", timeframe="1m", limit=100)
    assert len(rows) == 61
    stored = rows[9]
    assert (stored.close, stored.high, stored.volume) == (0.0893, 0.0895, 99.0)
    assert rows[8].close == first[8].close


async def check_gap_records_are_overwritten_by_market_and_start(store: Store) -> None:
    """A gap is recorded once per market and first missing time; later states overwrite it."""
    found = GapRow("binance", "ETH/BTC", "1m", MINUTE, 3 * MINUTE, "open", 0, 10, 10)
    other = GapRow("binance", "XMR/BTC", "1m", MINUTE, MINUTE, "open", 0, 10, 10)
    await store.save_gaps([found, other])
    assert await store.gaps() == [found, other]

    settled = GapRow("binance", "ETH/BTC", "1m", MINUTE, 3 * MINUTE, "empty", 3, 10, 99)
    await store.save_gaps([settled])
    assert await store.gaps() == [other]
    assert await store.gaps(states=("empty",)) == [settled]
