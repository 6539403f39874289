"""Exchange poller: markets and an exchange feed in -> their closed candles stored and published.

On start each market resumes from its last stored candle (one query for all); a market with
none is backfilled over `backfill_hours`, page by page. From then on a market is polled just
after each of its candles closes and asks only for candles after the last stored one: the
newest stored time lives in memory, and the newest published one in Redis (written with every
publication), so a poll costs no database query. When the budget cannot keep every market
current, the most stale market goes first, so every market keeps being polled.

Fetch tasks hand their candles to one sink, which reconciles them against what is stored and
published (`ingest.reconcile`), stores them in one batch, publishes the new ones in one
pipeline, and records gaps. A gap (missing candles between stored ones) is fetched again, at
most `gap_retries` times; what is still missing then is recorded as no-trade ("empty") and
never fetched again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.collector.calendar import MarketCalendar, calendar_for
from services.collector.ingest import (
    candles_from_rows,
    missing_times,
    ranges_of,
    reconcile,
    stamped,
    validate,
)
from services.collector.schedule import Market, PollQueue, plan
from services.collector.sources.exchange import (
    ExchangeFeed,
    FetchFailed,
    MarketUnavailable,
)
from services.collector.sources.stream import KlineStream
from shared import metrics
from shared.bus import Bus
from shared.messages import TIMEFRAME_MS, CandleClosed, Stream
from shared.runtime import uninterrupted
from shared.store import GapRow, Store

log = logging.getLogger(__name__)

_TIMEFRAMES = {ms: name for name, ms in TIMEFRAME_MS.items()}
_SINK_BATCH = 20_000  # candles stored and published together at most


class Clock(Protocol):
    """Market time in epoch milliseconds, and a way to wait for it."""

    def now_ms(self) -> int:
        """Return the current market time."""
        ...

    async def sleep_until(self, ms: int) -> None:
        """Return once market time `ms` has come."""
        ...


class MarketClock:
    """Market time in epoch milliseconds: the wall clock, or a simulated one for replays.

    Simulated: `start_ms` at wall time `anchor_s`, advancing `speed` times as fast.
    """

    def __init__(
        self, start_ms: int | None = None, anchor_s: float | None = None, speed: float = 1.0
    ) -> None:
        self._start_ms = start_ms
        self._anchor_s = time.time() if anchor_s is None else anchor_s
        self.speed = speed

    def now_ms(self) -> int:
        """Return the current market time."""
        if self._start_ms is None:
            return int(time.time() * 1000)
        return self._start_ms + int((time.time() - self._anchor_s) * self.speed * 1000)

    async def sleep_until(self, ms: int) -> None:
        """Sleep until market time `ms` (at once if it has passed)."""
        delay_s = (ms - self.now_ms()) / 1000 / self.speed
        await asyncio.sleep(max(0.0, delay_s))


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """What the poller needs from the collector's settings."""

    exchange: str
    symbols: Sequence[str]
    timeframes: Sequence[str]
    calendars: dict[str, str]
    backfill_hours: float
    page_limit: int
    settle_ms: int
    clock_tolerance_ms: int
    gap_retries: int
    recheck_candles: int
    stream_grace_ms: int
    max_concurrency: int
    budget_weight_per_min: float


@dataclass(slots=True, eq=False)  # compared and hashed by identity
class Tracked:
    """One market's progress: its newest stored and published candles, and open gaps."""

    market: Market
    timeframe: str
    calendar: MarketCalendar
    last_stored_ms: int | None = None
    last_published_ms: int | None = None
    gaps: dict[int, GapRow] = field(default_factory=dict)  # open ones, by first open time
    gap_retry_at_ms: dict[int, int] = field(default_factory=dict)
    busy: bool = False  # a request for it is in flight
    unsunk: int = 0  # its deliveries the sink has not stored yet
    unavailable: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.market.exchange, self.market.symbol, self.timeframe)

    @property
    def occupied(self) -> bool:
        """True while a request for it is in flight or its candles wait for the sink: until
        they are stored its last stored candle is not known, and another request would fetch
        them again."""
        return self.busy or self.unsunk > 0


@dataclass(slots=True)
class _Delivery:
    """Candles one request returned, and gap records to write before or after them."""

    tracked: Tracked
    candles: list[CandleClosed]
    now_ms: int
    gaps_after: list[GapRow] = field(default_factory=list)


class Poller:
    """Keeps every configured market's candles current; see the module docstring."""

    def __init__(
        self,
        feed: ExchangeFeed,
        bus: Bus,
        store: Store,
        config: PollerConfig,
        clock: Clock,
        stream: KlineStream | None = None,
    ) -> None:
        self._feed = feed
        self._stream = stream
        self._bus = bus
        self._store = store
        self._config = config
        self._clock = clock
        markets = [
            Market(
                config.exchange,
                symbol,
                TIMEFRAME_MS[timeframe],
                config.calendars.get(symbol, "24/7"),
            )
            for symbol in config.symbols
            for timeframe in config.timeframes
        ]
        self._tracked = {
            market: Tracked(market, _TIMEFRAMES[market.timeframe_ms], calendar_for(market.calendar))
            for market in markets
        }
        self._by_key = {tracked.key: tracked for tracked in self._tracked.values()}
        retry_ms = max(config.settle_ms, 5_000)
        # With a stream, REST polls a market only when the stream has not delivered in time.
        settle_ms = config.settle_ms + (config.stream_grace_ms if stream is not None else 0)
        self._queue = PollQueue(markets, settle_ms=settle_ms, retry_ms=retry_ms)
        self._deliveries: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._polling = 0
        self._repair_slots = asyncio.Semaphore(max(1, config.max_concurrency // 4))
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._staleness_exported_s = -math.inf

    @property
    def tracked(self) -> list[Tracked]:
        """Every market's progress."""
        return list(self._tracked.values())

    async def restore(self, last_stored: dict[tuple[str, str, str], int]) -> None:
        """Take each market's newest stored candle (published too: the caller republished
        what was not) and the open gaps from the store."""
        for tracked in self._tracked.values():
            last = last_stored.get(tracked.key)
            if last is not None:
                tracked.last_stored_ms = tracked.last_published_ms = last
                self._queue.record(tracked.market, last)
        now_ms = self._clock.now_ms()
        for gap in await self._store.gaps(states=("open",)):
            owner = self._by_key.get((gap.exchange, gap.symbol, gap.timeframe))
            if owner is not None:
                owner.gaps[gap.first_open_ms] = gap
                owner.gap_retry_at_ms[gap.first_open_ms] = now_ms

    def budget_report(self) -> str:
        """Say whether the request budget keeps every market current (logged at start)."""
        weight = max((source.weight for source in self._feed.sources), default=1.0)
        report = plan(
            list(self._tracked),
            budget_weight_per_min=self._config.budget_weight_per_min,
            weight_per_request=weight,
            headroom=0.1,
        )
        return report.message

    async def run(self) -> None:
        """Poll, repair and sink until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._sink_loop())
            group.create_task(self._repair_loop(group))
            if self._stream is not None:
                for tracked in self._tracked.values():
                    group.create_task(self._listen(self._stream, tracked))
            await self._poll_loop(group)

    async def _listen(self, stream: KlineStream, tracked: Tracked) -> None:
        """Hand every candle the stream finalises to the sink; REST fills what it misses."""
        after: int | None = None
        tf = tracked.market.timeframe_ms
        while True:
            # a candle whose end is a settle period past is final even if nothing followed it
            final_after_ms = self._closed_by(self._clock.now_ms()) - self._config.settle_ms - tf
            rows = await stream.closed_rows(
                tracked.market.symbol, tracked.timeframe, after, final_after_ms=final_after_ms
            )
            if not rows:
                continue
            candles, _ = candles_from_rows(
                rows,
                exchange=tracked.market.exchange,
                symbol=tracked.market.symbol,
                timeframe=tracked.timeframe,
                source=stream.name,
            )
            after = max(row[0] for row in rows)
            if tracked.last_stored_ms is None:
                continue  # the backfill (REST) comes first
            await self._deliver(_Delivery(tracked, candles, self._clock.now_ms()))

    # --- polling ----------------------------------------------------------------------------

    async def _poll_loop(self, group: asyncio.TaskGroup) -> None:
        while True:
            now_ms = self._clock.now_ms()
            self._export_staleness(now_ms)
            free = self._config.max_concurrency - self._polling
            skip = {t.market for t in self._tracked.values() if t.occupied or t.unavailable}
            for market in self._queue.pick(now_ms, free, skip) if free > 0 else []:
                tracked = self._tracked[market]
                tracked.busy = True
                self._polling += 1
                group.create_task(self._poll(tracked))
            self._wake.clear()
            due_ms = self._queue.next_due_ms()
            await self._sleep_or_wake(due_ms or now_ms + 60_000, self._wake)

    async def _sleep_or_wake(self, until_ms: int, wake: asyncio.Event) -> None:
        """Wait until market time `until_ms`, or until `wake` is set, whichever comes first."""
        sleep = asyncio.ensure_future(self._clock.sleep_until(until_ms))
        woken = asyncio.ensure_future(wake.wait())
        await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (sleep, woken):
            waiter.cancel()

    async def _poll(self, tracked: Tracked) -> None:
        """Fetch the market's candles after its last stored one, page by page."""
        tf = tracked.market.timeframe_ms
        try:
            if tracked.last_stored_ms is None:
                start = self._clock.now_ms() - int(self._config.backfill_hours * 3_600_000)
                since = start // tf * tf
            else:
                since = tracked.last_stored_ms + tf * (1 - self._config.recheck_candles)
            await self._fetch_pages(tracked, since)
        except MarketUnavailable as error:
            tracked.unavailable = str(error)
            log.error("%s is not available, no longer polled: %s", tracked.market.symbol, error)
        except FetchFailed as error:
            log.warning("poll failed, retried later: %s", error)
        finally:
            tracked.busy = False
            self._polling -= 1
            self._wake.set()
            self._slot_freed.set()

    async def _fetch_pages(self, tracked: Tracked, since: int) -> None:
        tf = tracked.market.timeframe_ms
        limit = self._config.page_limit
        while True:
            now_ms = self._clock.now_ms()  # before the request: only what had closed by then
            fetched = await self._feed.fetch(tracked.market.symbol, tracked.timeframe, since, limit)
            candles, malformed = candles_from_rows(
                fetched.rows,
                exchange=tracked.market.exchange,
                symbol=tracked.market.symbol,
                timeframe=tracked.timeframe,
                source=fetched.source,
            )
            if malformed:
                metrics.CANDLES_REJECTED.labels("malformed").inc(malformed)
            await self._deliver(_Delivery(tracked, candles, now_ms))
            closed = [
                c.open_time_ms for c in candles if c.open_time_ms + tf <= self._closed_by(now_ms)
            ]
            newest = max(closed, default=None)
            last_closed_open = self._closed_by(now_ms) // tf * tf - tf
            if len(fetched.rows) < limit or newest is None or newest >= last_closed_open:
                return
            since = newest + tf

    def _closed_by(self, now_ms: int) -> int:
        return now_ms - self._config.clock_tolerance_ms

    # --- gap repair -------------------------------------------------------------------------

    async def _repair_loop(self, group: asyncio.TaskGroup) -> None:
        while True:
            now_ms = self._clock.now_ms()
            for tracked in self._tracked.values():
                due = [first for first, at in tracked.gap_retry_at_ms.items() if at <= now_ms]
                if due and not tracked.occupied and tracked.unavailable is None:
                    # repairs share the requests in flight with polls, and take a quarter
                    busy = self._polling >= self._config.max_concurrency
                    if busy or self._repair_slots.locked():
                        break
                    tracked.busy = True
                    await self._repair_slots.acquire()
                    self._polling += 1
                    group.create_task(self._repair(tracked))
            self._slot_freed.clear()
            # again in a second, or as soon as a request in flight ends (a slot is free)
            await self._sleep_or_wake(now_ms + 1_000, self._slot_freed)

    async def _repair(self, tracked: Tracked) -> None:
        """Fetch the market's oldest open gaps again (one page), then settle each gap's state."""
        tf = tracked.market.timeframe_ms
        try:
            gaps = sorted(tracked.gaps.values(), key=lambda gap: gap.first_open_ms)
            first = gaps[0].first_open_ms
            window_end = first + (self._config.page_limit - 1) * tf
            covered = [gap for gap in gaps if gap.first_open_ms <= window_end]
            last = min(max(gap.last_open_ms for gap in covered), window_end)
            now_ms = self._clock.now_ms()
            fetched = await self._feed.fetch(
                tracked.market.symbol, tracked.timeframe, first, (last - first) // tf + 1
            )
            candles, _ = candles_from_rows(
                fetched.rows,
                exchange=tracked.market.exchange,
                symbol=tracked.market.symbol,
                timeframe=tracked.timeframe,
                source=fetched.source,
            )
            # `limit` counts rows, not minutes: past a no-trade minute the page runs beyond the
            # window, into candles the polls deliver. Keep the window only.
            candles = [c for c in candles if first <= c.open_time_ms <= last]
            have = [c.open_time_ms for c in validate(candles, now_ms=self._closed_by(now_ms))[0]]
            settled = self._settle_gaps(tracked, covered, window_end, have, now_ms)
            await self._deliver(_Delivery(tracked, candles, now_ms, gaps_after=settled))
        except (FetchFailed, MarketUnavailable) as error:
            log.warning("gap repair failed, retried later: %s", error)
            for first_ms in list(tracked.gap_retry_at_ms):
                tracked.gap_retry_at_ms[first_ms] = self._clock.now_ms() + tf
        finally:
            tracked.busy = False
            self._repair_slots.release()
            self._polling -= 1
            self._wake.set()
            self._slot_freed.set()

    def _settle_gaps(
        self,
        tracked: Tracked,
        covered: list[GapRow],
        window_end: int,
        have: list[int],
        now_ms: int,
    ) -> list[GapRow]:
        """Return the new records of the covered gaps: repaired, still open, or empty."""
        tf = tracked.market.timeframe_ms
        records: dict[int, GapRow] = {}
        for gap in covered:
            del tracked.gaps[gap.first_open_ms]
            tracked.gap_retry_at_ms.pop(gap.first_open_ms, None)
            end = min(gap.last_open_ms, window_end)
            missing = missing_times(gap.first_open_ms, end, tf, have)
            attempts = gap.attempts + 1
            records[gap.first_open_ms] = _gap(gap, gap.first_open_ms, gap.last_open_ms,
                                              "repaired", attempts, now_ms)  # fmt: skip
            if not missing:
                metrics.GAPS.labels("repaired").inc()
            state = "empty" if attempts >= self._config.gap_retries else "open"
            for run_first, run_last in ranges_of(missing, tf):
                records[run_first] = _gap(gap, run_first, run_last, state, attempts, now_ms)
                metrics.GAPS.labels("empty" if state == "empty" else "retried").inc()
            if gap.last_open_ms > window_end:  # beyond this page: untouched
                tail = _gap(gap, window_end + tf, gap.last_open_ms, "open", gap.attempts, now_ms)
                records[tail.first_open_ms] = tail
        for record in records.values():
            if record.state == "open":
                tracked.gaps[record.first_open_ms] = record
                tracked.gap_retry_at_ms[record.first_open_ms] = now_ms + record.attempts * tf
        return list(records.values())

    # --- sink -------------------------------------------------------------------------------

    async def _deliver(self, delivery: _Delivery) -> None:
        delivery.tracked.unsunk += 1
        await self._deliveries.put(delivery)

    async def _sink_loop(self) -> None:
        while True:
            batch = [await self._deliveries.get()]
            size = len(batch[0].candles)
            while not self._deliveries.empty() and size < _SINK_BATCH:
                batch.append(self._deliveries.get_nowait())
                size += len(batch[-1].candles)
            try:
                # a stop waits for the batch: stored and published, or neither
                await uninterrupted(self._sink(batch))
            finally:
                for delivery in batch:
                    delivery.tracked.unsunk -= 1
                self._wake.set()  # their markets may be polled again

    async def _sink(self, batch: list[_Delivery]) -> None:
        """Store a batch of deliveries in one write and publish their new candles in one go.

        Order: gaps found first, then candles, then publication, then settled gaps, so a crash
        anywhere leaves nothing missing that is not recorded as missing.
        """
        stored: list[CandleClosed] = []
        published: list[CandleClosed] = []
        found: list[GapRow] = []
        late = 0
        progress: dict[Tracked, int] = {}
        for delivery in batch:
            tracked = delivery.tracked
            result = reconcile(
                delivery.candles,
                now_ms=self._closed_by(delivery.now_ms),
                last_stored_ms=progress.get(tracked, tracked.last_stored_ms),
                last_published_ms=max(progress.get(tracked, -1), tracked.last_published_ms or -1),
            )
            for rejection in result.rejected:
                metrics.CANDLES_REJECTED.labels(rejection.reason).inc()
                if rejection.reason != "not_closed":
                    log.warning(
                        "rejected %s %d: %s",
                        rejection.candle.key,
                        rejection.candle.open_time_ms,
                        rejection.reason,
                    )
            stored += result.stored
            published += result.published
            late += result.late
            if result.published:
                progress[tracked] = result.published[-1].open_time_ms
            for first, last in result.gaps:
                if first in tracked.gaps:
                    continue
                gap = GapRow(*tracked.key, first, last, "open", 0, delivery.now_ms,
                             delivery.now_ms)  # fmt: skip
                found.append(gap)
                metrics.GAPS.labels("found").inc()
        await self._store.save_gaps(found)
        inserted, revised = await self._store.upsert_candles(stored)
        if published:
            await self._bus.publish_many(
                Stream.CANDLES, stamped(published, int(time.time() * 1000))
            )
        await self._store.save_gaps([gap for d in batch for gap in d.gaps_after])
        source = self._config.exchange
        metrics.CANDLES_STORED.labels(source).inc(inserted)
        metrics.CANDLES_REVISED.labels(source).inc(revised)
        metrics.CANDLES_PUBLISHED.labels(source).inc(len(published))
        metrics.CANDLES_LATE.labels(source).inc(late)
        if revised:
            log.info("%d stored candles replaced by the exchange's revision", revised)
        now_ms = self._clock.now_ms()
        for gap in found:
            tracked = self._by_key[(gap.exchange, gap.symbol, gap.timeframe)]
            tracked.gaps[gap.first_open_ms] = gap
            tracked.gap_retry_at_ms[gap.first_open_ms] = now_ms + tracked.market.timeframe_ms
        for tracked, newest in progress.items():
            tracked.last_published_ms = max(tracked.last_published_ms or -1, newest)
            tracked.last_stored_ms = max(tracked.last_stored_ms or -1, newest)
            self._queue.record(tracked.market, tracked.last_stored_ms)

    def _export_staleness(self, now_ms: int) -> None:
        """Set each market's staleness gauge, at most once a second (the loop wakes far more
        often: after every request)."""
        if time.monotonic() - self._staleness_exported_s < 1.0:
            return
        self._staleness_exported_s = time.monotonic()
        for tracked in self._tracked.values():
            metrics.TIMEFRAME_SECONDS.labels(tracked.timeframe).set(
                tracked.market.timeframe_ms / 1000
            )
            staleness = self._queue.staleness_s(tracked.market, now_ms)
            if staleness != float("inf"):
                metrics.MARKET_STALENESS.labels(tracked.market.symbol, tracked.timeframe).set(
                    staleness
                )


def _gap(gap: GapRow, first: int, last: int, state: str, attempts: int, now_ms: int) -> GapRow:
    return GapRow(gap.exchange, gap.symbol, gap.timeframe, first, last, state, attempts,
                  gap.found_at_ms, now_ms)  # fmt: skip
