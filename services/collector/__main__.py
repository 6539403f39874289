"""Collector service: a candle source -> validated candles, stored, then published."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from services.collector.ingest import dedupe, validate
from services.collector.settings import CollectorSettings
from services.collector.sources import source_from_settings
from shared import metrics
from shared.bus import Bus
from shared.messages import CandleClosed, Stream, market_key
from shared.runtime import run_service
from shared.store import Store

SERVICE = "collector"
log = logging.getLogger(__name__)


def stamped(candles: list[CandleClosed]) -> list[CandleClosed]:
    """Return copies carrying the publication time, where end-to-end latency starts."""
    now_ms = int(time.time() * 1000)
    return [msgspec.structs.replace(candle, closed_at_ms=now_ms) for candle in candles]


async def publish_unpublished(
    bus: Bus, store: Store, republish_limit: int, source_name: str
) -> dict[tuple[str, str, str], int]:
    """Publish candles a crash left stored but unpublished; return each market's last time.

    The bus records the last candle published per market atomically with the entry itself, so
    the gap between that and the store's last candle is exactly what was lost in between. A bus
    with no record of a market (a new Redis) gets nothing old: its consumers restore from the
    store.
    """
    last_stored = await store.last_candle_times()
    for market, stored_ms in last_stored.items():
        last = await bus.last_message(Stream.CANDLES, market_key(*market))
        if not isinstance(last, CandleClosed) or last.open_time_ms >= stored_ms:
            continue
        if republish_limit == 0:
            log.warning(
                "%s: stored candles after %d were never published; republishing is off",
                market_key(*market),
                last.open_time_ms,
            )
            continue
        exchange, symbol, timeframe = market
        rows = await store.candles_between(
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            start_ms=last.open_time_ms + 1,
            limit=republish_limit,
        )
        candles = [
            CandleClosed(
                exchange=row.exchange,
                symbol=row.symbol,
                timeframe=row.timeframe,
                open_time_ms=row.open_time_ms,
                open=row.open,
                high=row.high,
                low=row.low,
                close=row.close,
                volume=row.volume,
                source=source_name,
                closed_at_ms=0,
            )
            for row in rows
        ]
        await bus.publish_many(Stream.CANDLES, stamped(candles))
        log.info("republished %d stored candles of %s", len(candles), market_key(*market))
    return last_stored


async def main(settings: CollectorSettings, bus: Bus, store: Store) -> None:
    """Validate, store and publish every batch the source yields, resuming after the store."""
    source = source_from_settings(settings)
    resume_after = await publish_unpublished(bus, store, settings.republish_limit, source.name)
    log.info("collecting %d markets from %s", len(source.markets()), source.name)
    async for batch in source.batches(resume_after):
        valid, rejected = validate(batch, now_ms=source.now_ms())
        for rejection in rejected:
            metrics.CANDLES_REJECTED.labels(rejection.reason).inc()
            log.warning(
                "rejected %s %d: %s",
                rejection.candle.key,
                rejection.candle.open_time_ms,
                rejection.reason,
            )
        candles = dedupe(valid)
        if not candles:
            continue
        stored = await store.save_candles(candles)
        await bus.publish_many(Stream.CANDLES, stamped(candles))
        metrics.CANDLES_STORED.labels(source.name).inc(stored)
        metrics.CANDLES_PUBLISHED.labels(source.name).inc(len(candles))
    log.info("source %s is exhausted; idling", source.name)
    await asyncio.Event().wait()


if __name__ == "__main__":
    run_service(SERVICE, main, CollectorSettings())
