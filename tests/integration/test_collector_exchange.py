"""The collector's exchange poller against the stand-in exchange, through the real ccxt client,
real Redis and real Postgres: backfill, incremental polls, gaps, faults, fallback, budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import pytest
from prometheus_client import REGISTRY

from services.collector.poller import Poller, PollerConfig
from services.collector.sources.exchange import ExchangeFeed, SourceSpec, open_feed
from services.collector.sources.stream import KlineStream
from shared.bus_redis import RedisBus
from shared.messages import CandleClosed, Stream
from shared.pacing import Backoff
from shared.store import Store, create_engine
from tests.conftest import DATA_DIR
from tests.standin.clock import Clock
from tests.standin.faults import (
    Banned,
    Hang,
    Malformed,
    Omission,
    RateLimited,
    Revision,
    ServerError,
)
from tests.standin.market import Market, revised_row
from tests.standin.request_log import RequestRecord, inside_retry_windows
from tests.standin.server import StandIn, build_market, serve_standin
from tests.standin.weight import WeightMeter

pytestmark = pytest.mark.skipif(
    not DATA_DIR.is_dir(),
    reason=f"real market data not found: expected the team folder at {DATA_DIR}",
)

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


class StandInClock:
    """The poller's clock read from the stand-in's: moved by hand, or running at a speed."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def seconds(self) -> float:
        """Market time in seconds: the request budget's clock in accelerated tests."""
        return self._clock.now_ms() / 1000

    async def sleep(self, market_s: float) -> None:
        await asyncio.sleep(market_s / self._clock.speed if self._clock.speed else 0.002)

    async def sleep_until(self, ms: int) -> None:
        while (left := ms - self._clock.now_ms()) > 0:
            await asyncio.sleep(left / 1000 / self._clock.speed if self._clock.speed else 0.002)


def config(symbols: list[str], **changes: object) -> PollerConfig:
    base = PollerConfig(
        exchange="binance",
        symbols=symbols,
        timeframes=["1m"],
        calendars={},
        backfill_hours=24.0,
        page_limit=1000,
        settle_ms=0,
        clock_tolerance_ms=0,
        gap_retries=3,
        recheck_candles=0,
        stream_grace_ms=10_000,
        max_concurrency=8,
        budget_weight_per_min=60_000.0,
    )
    return replace(base, **changes)


def feed(
    *urls: str,
    budget: float = 60_000.0,
    cooldown_s: float = 0.5,
    clock: StandInClock | None = None,
    timeout_ms: int = 1_000,
) -> ExchangeFeed:
    specs = [SourceSpec("binance", "binance", urls[0])]
    specs += [SourceSpec(f"binance-{i}", "binance", url) for i, url in enumerate(urls[1:], 1)]
    return open_feed(
        specs,
        budget_weight_per_min=budget,
        page_limit=1000,
        timeout_ms=timeout_ms,
        credentials=None,
        failure_threshold=3,
        cooldown_s=cooldown_s,
        backoff=Backoff(0.01, 0.05),
        max_attempts=8,
        **({} if clock is None else {"clock": clock.seconds, "sleep": clock.sleep}),
    )


@dataclass
class Rig:
    standin: StandIn
    store: Store
    bus: RedisBus

    @property
    def market(self) -> Market:
        return self.standin.market

    def served(self, symbol: str, first_ms: int, last_ms: int) -> list[tuple[int, ...]]:
        """The stand-in's closed candles of one symbol with open times in [first, last]."""
        series = self.market.catalog.series(symbol.replace("/", ""), "1m")
        return [row for row in series.rows if first_ms <= row[0] <= last_ms]

    async def stored(self, symbol: str) -> list[tuple[int, ...]]:
        rows = await self.store.candles_between(
            exchange="binance", symbol=symbol, timeframe="1m", start_ms=0, limit=1_000_000
        )
        return [(r.open_time_ms, r.open, r.high, r.low, r.close, r.volume) for r in rows]

    async def published(self) -> list[CandleClosed]:
        entries = await self.bus.read_range(Stream.CANDLES)  # type: ignore[attr-defined]
        return [m for m in entries if isinstance(m, CandleClosed)]


@pytest.fixture
def standin() -> Iterator[StandIn]:
    market = build_market(DATA_DIR)
    market.clock.set(market.catalog.end_ms - DAY)  # a day of history, and a day to come
    with serve_standin(market) as running:
        yield running


@pytest.fixture
async def rig(standin: StandIn, database_url: str, redis_url: str) -> AsyncIterator[Rig]:
    store = Store(create_engine(database_url))
    bus = RedisBus(redis_url)
    yield Rig(standin, store, bus)
    await bus.close()
    await store.close()


async def running(poller: Poller) -> asyncio.Task[None]:
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0)
    return task


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def current(poller: Poller, now_ms: int) -> Callable[[], Awaitable[bool]]:
    """Whether every market has stored its newest closed candle."""

    async def check() -> bool:
        last_closed = now_ms // MINUTE * MINUTE - MINUTE
        return all(
            t.last_stored_ms is not None and t.last_stored_ms >= last_closed for t in poller.tracked
        )

    return check


def one_minute_symbols(market: Market, count: int) -> list[str]:
    """`count` 1m symbols of the stand-in, the illiquid XMR ones (real no-trade gaps) first."""
    listed = sorted(
        (
            listing.symbol
            for listing in market.catalog.listings.values()
            if "1m" in listing.intervals()
        ),
        key=lambda symbol: (not symbol.startswith("XMR"), symbol),
    )
    if len(listed) < count:
        pytest.skip(
            f"the data folder gives {len(listed)} one-minute symbols, the test needs {count}"
        )
    return listed[:count]


def klines(market: Market, since_index: int = 0) -> list[RequestRecord]:
    return market.log.records(path="/api/v3/klines", since_index=since_index)


class SlowStore(Store):
    """The real store, with each candle write held back: a database under load."""

    delay_s = 0.3

    async def upsert_candles(self, candles: Sequence[CandleClosed]) -> tuple[int, int]:
        await asyncio.sleep(self.delay_s)
        return await super().upsert_candles(candles)


async def test_a_market_is_not_fetched_again_while_its_candles_wait_to_be_stored(
    rig: Rig, database_url: str
) -> None:
    """Until the sink has stored a market's candles its last stored candle is unknown: a poll
    then would fetch the backfill again and spend the shared budget twice."""
    symbols = one_minute_symbols(rig.market, 6)
    store = SlowStore(create_engine(database_url))
    clock = StandInClock(rig.market.clock)
    exchange = feed(rig.standin.base_url, timeout_ms=10_000)
    poller = Poller(exchange, rig.bus, store, config(symbols), clock)
    await poller.restore({})
    start_ms = rig.market.clock.now_ms()
    task = await running(poller)
    try:
        await until(current(poller, start_ms))
        for _ in range(3):  # and incremental polls, while every write still takes a while
            now_ms = rig.market.clock.advance(MINUTE)
            await until(current(poller, now_ms))
        # a gap is asked again on purpose (up to `gap_retries` times): those are not counted
        gaps = await store.gaps(states=("open", "empty", "repaired"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await exchange.close()
        await store.close()
    repairs = {(gap.symbol.replace("/", ""), gap.first_open_ms) for gap in gaps}
    asked: dict[str, list[int]] = {symbol.replace("/", ""): [] for symbol in symbols}
    for record in klines(rig.market):
        assert record.start_time is not None
        if (record.symbol, record.start_time) not in repairs:
            asked[record.symbol].append(record.start_time)
    for symbol, starts in asked.items():
        assert len(starts) >= 4, symbol  # the backfill and three polls at least
        assert len(starts) == len(set(starts)), f"{symbol}: the same page was asked twice"


async def test_backfill_then_every_poll_asks_only_for_new_candles_for_20_symbols_over_a_day(
    rig: Rig,
) -> None:
    symbols = one_minute_symbols(rig.market, 20)
    clock = StandInClock(rig.market.clock)
    # no faults here: a generous timeout, so a busy machine's slow answer is not retried
    exchange = feed(rig.standin.base_url, timeout_ms=10_000)
    poller = Poller(exchange, rig.bus, rig.store, config(symbols), clock)
    await poller.restore(await rig.store.last_candle_times())
    start_ms = rig.market.clock.now_ms()
    backfill_from = (start_ms - DAY) // MINUTE * MINUTE

    def newest_served(symbol: str, now_ms: int) -> int:
        return rig.served(symbol, 0, now_ms - MINUTE)[-1][0]

    def caught_up(now_ms: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return all(
                t.last_stored_ms == newest_served(t.market.symbol, now_ms) for t in poller.tracked
            )

        return check

    task = await running(poller)
    try:
        await until(caught_up(start_ms))
        backfill = klines(rig.market)
        assert {r.symbol for r in backfill} == {s.replace("/", "") for s in symbols}
        first_pages = [r for r in backfill if r.start_time == backfill_from]
        assert len(first_pages) == 20  # one backfill from the lookback's start per market

        steps, polls, repairs, rows_new = 96, 0, 0, 0
        for _ in range(steps):  # a simulated day, 15 minutes at a time
            before = {t.market.symbol: t.last_stored_ms for t in poller.tracked}
            mark = rig.market.log.next_index()
            now_ms = rig.market.clock.advance(15 * MINUTE)
            await until(caught_up(now_ms))
            await asyncio.sleep(0.02)  # let a repair that is due finish before counting
            first_polls: set[str] = set()
            for record in klines(rig.market, mark):
                symbol = next(s for s in symbols if s.replace("/", "") == record.symbol)
                last = before[symbol]
                assert last is not None and record.start_time is not None
                if record.start_time > last:  # a poll: only candles after the last stored
                    polls += 1
                    if symbol in first_polls:  # the newest minute was missing: asked again
                        continue
                    first_polls.add(symbol)
                    assert record.start_time == last + MINUTE
                    # the closed candles after the last stored, and the open one Binance adds
                    visible = rig.served(symbol, last + MINUTE, now_ms)
                    assert record.rows == len(visible)
                    rows_new += len([row for row in visible if row[0] + MINUTE <= now_ms])
                else:  # a repair: inside a recorded gap
                    repairs += 1
            assert first_polls == set(symbols)
        assert polls >= steps * 20
        # XMR/BTC's real no-trade minutes: each gap asked for at most `gap_retries` times
        empty = await rig.store.gaps(states=("empty",))
        assert empty, "the illiquid markets' no-trade minutes are recorded"
        assert repairs <= 3 * (len(empty) + len(await rig.store.gaps(states=("open",))))
        for gap in empty:
            assert rig.served(gap.symbol, gap.first_open_ms, gap.last_open_ms) == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await exchange.close()

    end_ms = rig.market.clock.now_ms()
    published = await rig.bus.read_after(Stream.CANDLES, "0-0", 10_000_000)
    keys = [(m.symbol, m.open_time_ms) for _, m in published if isinstance(m, CandleClosed)]
    assert len(keys) == len(set(keys))  # nothing published twice
    total = 0
    for symbol in symbols:
        expected = rig.served(symbol, backfill_from, end_ms - MINUTE)
        assert await rig.stored(symbol) == [
            tuple(float(v) if i else v for i, v in enumerate(row)) for row in expected
        ]
        total += len(expected)
    assert len(keys) == total
    print(
        f"\n{len(symbols)} markets, backfill {len(backfill)} requests, then {polls} polls"
        f" ({rows_new} new candles) and {repairs} gap repairs; {total} candles stored"
    )


async def test_every_fault_is_survived_without_a_candle_lost_or_doubled(
    rig: Rig, standin: StandIn
) -> None:
    """429 and 418 with Retry-After, 500s that open the breaker (the fallback serves, then the
    primary again), a hung connection, malformed JSON, a missing candle, a revised candle and
    the open candle, one after another."""
    fallback_market = build_market(DATA_DIR)
    symbols = ["ETH/BTC", "ADA/BTC", "DASH/BTC"]
    with serve_standin(fallback_market) as fallback:
        primary, spare = rig.market, fallback.market

        def advance(ms: int) -> int:
            now_ms = primary.clock.advance(ms)
            spare.clock.set(now_ms)
            return now_ms

        spare.clock.set(primary.clock.now_ms())
        exchange = feed(rig.standin.base_url, fallback.base_url, cooldown_s=0.3)
        poller = Poller(
            exchange,
            rig.bus,
            rig.store,
            # one request at a time: a request the client sent before a 429 reached it cannot
            # land inside the window it opened, so every one there would be a violation
            config(symbols, backfill_hours=2.0, recheck_candles=1, max_concurrency=1),
            StandInClock(primary.clock),
        )
        await poller.restore({})
        backfill_from = (primary.clock.now_ms() - 2 * HOUR) // MINUTE * MINUTE

        def newest(symbol: str, now_ms: int) -> int:
            return rig.served(symbol, 0, now_ms - MINUTE)[-1][0]

        async def step(minutes: int = 1) -> int:
            now_ms = advance(minutes * MINUTE)

            async def caught_up() -> bool:
                return all(
                    t.last_stored_ms == newest(t.market.symbol, now_ms) for t in poller.tracked
                )

            await until(caught_up, timeout_s=20)
            return now_ms

        task = await running(poller)
        try:
            await step(0)
            # 429 then 418, each with Retry-After: nothing may reach the exchange inside it
            primary.faults.add(RateLimited(retry_after_s=1))
            await step()
            primary.faults.add(Banned(retry_after_s=2))
            await step()
            assert [r.status for r in klines(primary) if r.status in (418, 429)] == [429, 418]
            assert inside_retry_windows(primary.log.records(), grace_s=0.05) == []

            # 500s: the breaker opens, the fallback serves, the primary comes back
            mark = primary.log.next_index()
            primary.faults.add(ServerError(count=6))
            await step()
            assert spare.log.records(path="/api/v3/klines"), "the fallback served"
            assert exchange.pool.fallback_in_use
            deadline = time.monotonic() + 15
            while [r.status for r in klines(primary, mark)][-1] != 200:  # the trial succeeds
                assert time.monotonic() < deadline, "the primary was never tried again"
                await asyncio.sleep(0.2)  # cooldowns run in real time
                await step()
            await step()
            recent = [r.status for r in klines(primary, mark)]
            assert recent.count(500) == 6 and recent[-1] == 200
            assert not exchange.pool.fallback_in_use

            # a hung connection (the client's timeout is 1 s), then a malformed body
            primary.faults.add(Hang(hang_s=3))
            await step()
            primary.faults.add(Malformed(count=2))
            await step()

            # a candle left out of one answer: found as a gap, fetched again, stored
            now_ms = primary.clock.now_ms()
            hidden = newest("ETH/BTC", now_ms + 2 * MINUTE) - MINUTE
            primary.faults.add(Omission(symbol="ETH/BTC", open_times=(hidden,)))
            await step(2)
            await step()
            await until(lambda: gap_state(rig.store, hidden, "repaired"), timeout_s=10)

            # a candle served, then revised: the next poll's recheck sees the revision
            revised_at = newest("ADA/BTC", primary.clock.now_ms() + MINUTE)
            revision = Revision(symbol="ADA/BTC", open_time=revised_at, close=None, volume=None)
            primary.faults.add(revision)
            await step()
            await step()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await exchange.close()

    end_ms = primary.clock.now_ms()
    published = await rig.bus.read_after(Stream.CANDLES, "0-0", 1_000_000)
    candles = [m for _, m in published if isinstance(m, CandleClosed)]
    keys = [(m.symbol, m.open_time_ms) for m in candles]
    assert len(keys) == len(set(keys))  # nothing published twice
    assert ("ETH/BTC", hidden) not in keys  # the repaired candle came late: stored only
    for symbol in symbols:
        expected = [
            revised_row(row, revision) if (symbol, row[0]) == ("ADA/BTC", revised_at) else row
            for row in rig.served(symbol, backfill_from, end_ms - MINUTE)
        ]
        assert await rig.stored(symbol) == [as_floats(row) for row in expected]
        served_closed = {row[0]: as_floats(row) for row in rig.served(symbol, 0, end_ms)}
        for m in candles:  # every published candle is the closed one, never a partial one
            if m.symbol == symbol:
                assert (m.open_time_ms, m.open, m.high, m.low, m.close, m.volume) == served_closed[
                    m.open_time_ms
                ]


async def gap_state(store: Store, first_ms: int, state: str) -> bool:
    return any(g.first_open_ms == first_ms for g in await store.gaps(states=(state,)))


def as_floats(row: tuple[int, ...]) -> tuple[int | float, ...]:
    return (row[0], *map(float, row[1:]))


@pytest.mark.parametrize(
    ("budget", "stream"),
    [(80.0, False), (24.0, False), (24.0, True)],
    ids=["budget-fits-24-markets", "budget-fits-10-of-24", "budget-fits-10-of-24-with-stream"],
)
async def test_polls_fit_the_request_budget_and_spread_fairly_when_it_is_short(
    rig: Rig, budget: float, stream: bool
) -> None:
    """Market time runs 30 times as fast, and so do the budget and the exchange's weight limit
    (100 per market minute here; Binance's real klines weight, 2): with budget for every market
    each is current every minute; with budget for half, the collector says so, polls the most
    stale first, starves none, and exports each market's staleness; with the kline stream,
    every market is current again, REST only backfilling. No 429 in any case."""
    market = rig.market
    symbols = one_minute_symbols(market, 24)
    clock = StandInClock(market.clock)
    market.weight = WeightMeter(100, wall=clock.seconds)
    market.clock.set(market.clock.now_ms(), speed=30)
    exchange = feed(rig.standin.base_url, budget=budget, clock=clock)
    await exchange.load_markets()
    kline_stream = (
        KlineStream.open(
            "binance-stream", "binance", api_url=rig.standin.base_url, timeout_ms=2_000,
            backoff=Backoff(0.01, 0.05),
        )
        if stream
        else None
    )  # fmt: skip
    poller = Poller(
        exchange,
        rig.bus,
        rig.store,
        config(
            symbols,
            backfill_hours=0.25,
            settle_ms=1_000,
            budget_weight_per_min=budget,
            stream_grace_ms=30_000,  # one wall second at this speed
        ),
        clock,
        kline_stream,
    )
    await poller.restore({})
    report = poller.budget_report()
    keeps_current = budget >= 80
    assert ("keeps all 24 markets current" in report) is keeps_current, report
    if not keeps_current:
        assert "keeps only 10 of 24 markets current" in report, report

    worst: dict[str, float] = {}
    polls: dict[str, int] = {s.replace("/", ""): 0 for s in symbols}
    task = await running(poller)
    try:
        started = market.clock.now_ms()
        await asyncio.sleep(6.0)  # three market minutes: backfill and settling in
        mark = market.log.next_index()
        while market.clock.now_ms() < started + 12 * MINUTE:
            await asyncio.sleep(0.05)
            now_ms = market.clock.now_ms()
            for t in poller.tracked:  # closed candles the exchange has and the store lacks
                after = (t.last_stored_ms or 0) + 1
                behind = len(rig.served(t.market.symbol, after, now_ms - MINUTE))
                worst[t.market.symbol] = max(worst.get(t.market.symbol, 0), behind)
        for record in klines(market, mark):
            polls[record.symbol] += 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await exchange.close()
        if kline_stream is not None:
            await kline_stream.close()

    statuses = [r.status for r in market.log.records()]
    assert 429 not in statuses and 418 not in statuses
    gauges = {
        s.labels["symbol"]
        for metric in REGISTRY.collect()
        if metric.name == "candlebus_collector_staleness_seconds"
        for s in metric.samples
    }
    assert set(symbols) <= gauges
    if stream:  # the stream delivers; REST asks only where it is late (illiquid markets)
        liquid = [symbol for symbol in polls if not symbol.startswith("XMR")]
        # Without the stream each of them is polled 4-5 times here. With it, REST steps in
        # only when a stream candle misses its grace (one wall second at this speed), which a
        # loaded machine makes happen now and then: at most about twice per market.
        assert sum(polls[symbol] for symbol in liquid) <= 2 * len(liquid), polls
    else:
        assert min(polls.values()) >= 3, polls  # nine market minutes: nobody starved
    if keeps_current or stream:  # at most the candle that just closed is still on its way
        assert max(worst.values()) <= 1, worst
    else:  # 10 requests a minute for 24 markets: each polled about every 2.4 minutes
        assert max(worst.values()) <= 4, worst
    print(
        f"\nbudget {budget:.0f}/min{' + stream' if stream else ''}: {report}; "
        "polls per market over 9 minutes "
        f"{min(polls.values())}..{max(polls.values())}, worst lag {max(worst.values()):.0f} candles"
    )
