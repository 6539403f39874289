"""Kline stream (I/O): a market in -> its closed candles' rows as the exchange pushes them.

Where ccxt offers a WebSocket OHLCV stream for the exchange (`has["watchOHLCV"]`), the collector
listens to it for every market and REST only fills what the stream missed. A streamed candle
counts as final once the stream has moved on to the next one: exchanges send a candle's last
update before the first of its successor, so every value is the closed candle's. A candle the
stream has not moved past (no trade since) is final once it ended a settle period ago.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared import metrics
from shared.ccxt_client import build_exchange, classify
from shared.pacing import Backoff

log = logging.getLogger(__name__)

Row = list[Any]


class KlineStream:
    """One ccxt.pro client: a WebSocket connection shared by every market's subscription."""

    def __init__(self, name: str, client: Any, backoff: Backoff) -> None:
        self.name = name
        self._client = client
        self._backoff = backoff
        self._watches: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._failures: dict[tuple[str, str], int] = {}

    @classmethod
    def open(
        cls, name: str, exchange_id: str, *, api_url: str | None, timeout_ms: int, backoff: Backoff
    ) -> KlineStream | None:
        """Return the exchange's kline stream, or None where ccxt has none for it."""
        client = build_exchange(exchange_id, api_url=api_url, timeout_ms=timeout_ms, streaming=True)
        if not client.has.get("watchOHLCV"):
            return None
        return cls(name, client, backoff)

    async def closed_rows(
        self,
        symbol: str,
        timeframe: str,
        after_ms: int | None,
        *,
        final_after_ms: int,
        wait_s: float = 1.0,
    ) -> list[Row]:
        """Wait up to `wait_s` for the next update of a market and return its rows that became
        final since `after_ms`, oldest first (often none: most updates move the open candle).

        Final: the stream has moved on to a later candle, or the candle opened at or before
        `final_after_ms` (it ended a while ago by the caller's clock: an illiquid market whose
        next candle has no trade yet). A dropped connection is reopened after a backoff step;
        the caller's REST polls fill whatever the stream missed meanwhile.
        """
        key = (symbol, timeframe)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = asyncio.ensure_future(
                self._client.watch_ohlcv(symbol, timeframe)
            )
        done, _ = await asyncio.wait({watch}, timeout=wait_s)
        if done:
            del self._watches[key]
            try:
                watch.result()
            except Exception as error:
                self._failures[key] = failures = self._failures.get(key, 0) + 1
                outcome = classify(error)
                metrics.STREAM_UPDATES.labels(self.name, outcome).inc()
                log.warning("%s stream of %s %s: %s", self.name, symbol, timeframe, outcome)
                await asyncio.sleep(self._backoff.next_delay(failures))
                return []
            self._failures.pop(key, None)
            metrics.STREAM_UPDATES.labels(self.name, "ok").inc()
        rows = self._cached(symbol, timeframe)
        if not rows:
            return []
        newest = rows[-1][0]
        floor = -1 if after_ms is None else after_ms
        # ccxt updates its cache in place: copy the rows handed on
        return [
            list(row)
            for row in rows
            if floor < row[0] and (row[0] < newest or row[0] <= final_after_ms)
        ]

    def _cached(self, symbol: str, timeframe: str) -> list[Row]:
        """The rows ccxt has collected for the market so far (its cache, oldest first)."""
        cache = getattr(self._client, "ohlcvs", None) or {}
        return list(cache.get(symbol, {}).get(timeframe) or [])

    async def close(self) -> None:
        """Close the WebSocket connection."""
        for watch in self._watches.values():
            watch.cancel()
        try:
            await self._client.close()
        except Exception:
            log.debug("closing the %s stream failed", self.name, exc_info=True)
