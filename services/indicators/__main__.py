"""Indicators service: CandleClosed -> IndicatorsComputed (stored, then published)."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import numpy as np

from services.indicators.engine import IndicatorEngine, IndicatorParams, warm_up_jit
from services.indicators.settings import IndicatorsSettings
from shared import metrics
from shared.bus import Batch, Bus
from shared.messages import CandleClosed, IndicatorsComputed, Stream
from shared.runtime import run_service
from shared.store import Store

SERVICE = "indicators"
log = logging.getLogger(__name__)


async def restore(engine: IndicatorEngine, store: Store, settings: IndicatorsSettings) -> None:
    """Warm every market that has indicator rows from its stored candles up to the last row."""
    last_times = await store.last_indicator_times()
    markets = sorted(last_times)
    step = settings.warmup_markets_per_query
    for start in range(0, len(markets), step):
        chunk = markets[start : start + step]
        history = await store.candle_history(
            markets=chunk, end_ms=last_times, limit=settings.warmup_candles
        )
        for market, rows in history.items():
            engine.warm(
                market,
                np.array([row.open_time_ms for row in rows], dtype=np.int64),
                np.array([row.high for row in rows]),
                np.array([row.low for row in rows]),
                np.array([row.close for row in rows]),
            )
    log.info("restored indicator state of %d markets", len(markets))


async def republished(
    candles: list[CandleClosed], computed: list[IndicatorsComputed], store: Store
) -> list[IndicatorsComputed]:
    """Return the stored rows of candles seen before (a redelivery), to publish them again."""
    if len(computed) == len(candles):
        return []  # every candle was new: the usual case costs nothing
    fresh = {(m.key, m.open_time_ms) for m in computed}
    seen = [
        (c.exchange, c.symbol, c.timeframe, c.open_time_ms)
        for c in candles
        if (c.key, c.open_time_ms) not in fresh
    ]
    stored = await store.indicators_at(seen)  # one query, however many were redelivered
    # Stored rows keep the close only: the other prices come from the redelivered candles.
    prices = {(c.key, c.open_time_ms): c for c in candles}
    return [
        msgspec.structs.replace(row, open=candle.open, high=candle.high, low=candle.low)
        for row in stored
        if (candle := prices.get((row.key, row.open_time_ms))) is not None
    ]


async def compute(engine: IndicatorEngine, batch: Batch, bus: Bus) -> list[IndicatorsComputed]:
    """Update the engine with a batch; dead-letter the candles it rejects as bad input."""
    candles = [m for m in batch.messages if isinstance(m, CandleClosed)]
    try:
        return engine.update(candles)
    except ValueError:
        pass  # the engine changes no state before it rejects: go candle by candle
    computed: list[IndicatorsComputed] = []
    for entry in batch.entries:
        assert isinstance(entry.message, CandleClosed)
        try:
            computed += engine.update([entry.message])
        except ValueError as exc:
            metrics.MESSAGES_FAILED.labels(SERVICE, Stream.CANDLES, "invalid").inc()
            await bus.dead_letter(batch, entry, "invalid", detail=str(exc))
    return computed


async def persist(
    batch: Batch,
    rows: list[IndicatorsComputed],
    again: list[IndicatorsComputed],
    bus: Bus,
    store: Store,
) -> None:
    """Store and publish one batch's rows, then ack it.

    The database write runs in a worker thread while the publish waits on Redis. Both are done
    before the ack, so a crash in between redelivers and never loses.
    """
    await asyncio.gather(
        store.save_indicators(rows), bus.publish_many(Stream.INDICATORS, [*again, *rows])
    )
    await bus.ack(batch)
    metrics.MESSAGES_HANDLED.labels(SERVICE, Stream.CANDLES).inc(len(batch.entries))
    if rows:
        metrics.STAGE_LATENCY.labels("indicators").observe(
            (time.time() * 1000 - rows[-1].candle_closed_at_ms) / 1000
        )


async def main(settings: IndicatorsSettings, bus: Bus, store: Store) -> None:
    """Update every market's indicators per candle batch; store, publish, then ack.

    Two stages overlap: while one batch is being stored and published, the next one is read
    and computed (the engine's state moves in candle order either way).
    """
    params = IndicatorParams()
    # Compile (or load from the cache) off the loop the kernels this service runs.
    await asyncio.to_thread(warm_up_jit, params, batch=False)
    engine = IndicatorEngine(params)
    await restore(engine, store, settings)
    seconds = metrics.HANDLE_SECONDS.labels(SERVICE, Stream.CANDLES)
    in_flight: asyncio.Future[None] | None = None
    try:
        async for batch in bus.consume(
            Stream.CANDLES,
            group=SERVICE,
            consumer=settings.consumer_name,
            count=settings.batch_size,
            block_ms=settings.block_ms,
        ):
            with seconds.time():
                candles = [m for m in batch.messages if isinstance(m, CandleClosed)]
                with metrics.INDICATOR_COMPUTE_SECONDS.time():
                    computed = await compute(engine, batch, bus)
                again = await republished(candles, computed, store)
            if in_flight is not None:
                await in_flight  # one batch in flight: rows land in candle order, errors surface
            in_flight = asyncio.ensure_future(persist(batch, computed, again, bus, store))
    finally:
        if in_flight is not None and not in_flight.done():
            in_flight.cancel()


if __name__ == "__main__":
    run_service(SERVICE, main, IndicatorsSettings())
