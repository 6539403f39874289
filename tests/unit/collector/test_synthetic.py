"""SyntheticSource: a seeded, valid, resumable random market on an accelerated clock."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Mapping

from services.collector.ingest import validate
from services.collector.sources import Market, SyntheticSource
from shared.messages import CandleClosed

MINUTE_MS = 60_000
START_MS = 1_699_999_200_000  # on every grid up to 1h, in the past


async def take(
    source: SyntheticSource, ticks: int, resume_after: Mapping[Market, int] | None = None
) -> list[list[CandleClosed]]:
    batches: list[list[CandleClosed]] = []
    async for batch in source.batches(resume_after or {}):
        batches.append(batch)
        if len(batches) == ticks:
            break
    return batches


def fast(
    *, symbols: int = 3, seed: int = 7, timeframe: str = "1m", start_ms: int = START_MS
) -> SyntheticSource:
    """Return an unpaced source."""
    return SyntheticSource(
        symbols=symbols, seed=seed, timeframe=timeframe, candle_interval_s=0, start_ms=start_ms
    )


async def test_one_candle_per_symbol_per_tick_on_the_timeframe_grid() -> None:
    batches = await take(fast(symbols=3, timeframe="5m"), ticks=4)

    assert [[c.symbol for c in batch] for batch in batches] == [
        ["SYN0/USD", "SYN1/USD", "SYN2/USD"]
    ] * 4
    assert [batch[0].open_time_ms for batch in batches] == [
        START_MS + i * 300_000 for i in range(4)
    ]
    assert {(c.exchange, c.timeframe, c.source) for b in batches for c in b} == {
        ("synthetic", "5m", "synthetic")
    }


async def test_same_seed_gives_the_same_market_and_another_seed_does_not() -> None:
    first = await take(fast(symbols=4, seed=11), ticks=50)
    again = await take(fast(symbols=4, seed=11), ticks=50)
    other = await take(fast(symbols=4, seed=12), ticks=50)

    assert first == again
    assert [c.close for c in first[-1]] != [c.close for c in other[-1]]


async def test_symbols_start_from_different_prices() -> None:
    batches = await take(fast(symbols=5), ticks=1)

    assert len({round(c.open, 6) for c in batches[0]}) == 5


async def test_every_candle_passes_validation_and_opens_at_the_previous_close() -> None:
    source = fast(symbols=5)
    batches = await take(source, ticks=2_000)

    candles = [c for batch in batches for c in batch]
    accepted, rejected = validate(candles, now_ms=source.now_ms())
    assert rejected == [] and len(accepted) == 10_000
    for before, after in itertools.pairwise(batches):
        assert [c.open for c in after] == [c.close for c in before]


async def test_volatility_switches_between_calm_and_volatile_regimes() -> None:
    batches = await take(fast(symbols=1), ticks=6_000)

    returns = [math.log(b[0].close / b[0].open) for b in batches]
    windows = [statistics.pstdev(returns[i : i + 50]) for i in range(0, len(returns), 50)]
    # A single-regime walk keeps the 50-candle volatility within a narrow band.
    assert max(windows) > 2.5 * min(windows)


async def test_resumed_source_continues_the_same_path_per_market() -> None:
    full = await take(fast(symbols=3), ticks=300)
    markets = fast(symbols=3).markets()
    # SYN0 stored up to its 150th candle, SYN1 nothing, SYN2 up to its 100th.
    resume_after = {markets[0]: START_MS + 149 * MINUTE_MS, markets[2]: START_MS + 99 * MINUTE_MS}

    resumed = await take(fast(symbols=3), ticks=300, resume_after=resume_after)

    def series(batches: list[list[CandleClosed]], symbol: str) -> list[CandleClosed]:
        return [c for batch in batches for c in batch if c.symbol == symbol]

    assert series(resumed, "SYN0/USD") == series(full, "SYN0/USD")[150:]
    assert series(resumed, "SYN1/USD") == series(full, "SYN1/USD")
    assert series(resumed, "SYN2/USD") == series(full, "SYN2/USD")[100:]


async def test_candles_come_one_interval_apart() -> None:
    source = SyntheticSource(symbols=2, candle_interval_s=0.05, start_ms=START_MS)
    seen: list[float] = []

    async for _batch in source.batches({}):
        seen.append(time.monotonic())
        if len(seen) == 7:
            break

    assert 0.29 <= seen[-1] - seen[0] <= 0.45


async def test_clock_runs_ahead_of_the_wall_clock_and_validation_follows_it() -> None:
    now_ms = int(time.time() * 1000)
    source = fast(symbols=2, start_ms=now_ms - now_ms % MINUTE_MS)

    batches = await take(source, ticks=100)

    last_open_ms = batches[-1][0].open_time_ms
    assert last_open_ms > time.time() * 1000
    assert source.now_ms() == last_open_ms + MINUTE_MS
    assert validate([c for b in batches for c in b], now_ms=source.now_ms())[1] == []


async def test_default_start_is_on_the_grid_in_the_past_and_the_same_after_a_restart() -> None:
    first = await take(SyntheticSource(timeframe="15m", candle_interval_s=0), ticks=1)
    restarted = await take(SyntheticSource(timeframe="15m", candle_interval_s=0), ticks=1)

    assert restarted == first
    assert first[0][0].open_time_ms % 900_000 == 0
    assert first[0][0].open_time_ms < time.time() * 1000 - 1_000 * 900_000
