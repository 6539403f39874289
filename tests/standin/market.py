"""The stand-in's market: catalog + clock + faults in -> Binance kline rows and exchangeInfo out.

No HTTP here: `app.py` turns these answers (and `BinanceError`) into responses. The market
also holds the account that the signed order endpoints trade on (`orders.py`), at
`last_price`.

Kline semantics follow Binance's GET /api/v3/klines: rows ascending by open time, `startTime` /
`endTime` bound the open time (both inclusive), `limit` defaults to 500 and is capped at 1000;
with `startTime` the page starts there, otherwise it is the latest `limit` rows up to `endTime`
(or now). Only candles that have opened by the clock's "now" exist. The last one is still open
while now < its close: it is served with partial values (the real open; high, low, close and
volume moved towards the real candle's in proportion to the time elapsed), as Binance serves
the forming candle, unless `open_candle` is switched off.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tests.standin.clock import Clock
from tests.standin.exchange_info import exchange_info
from tests.standin.faults import FaultBoard, Revision
from tests.standin.orders import Account
from tests.standin.request_log import RequestLog
from tests.standin.series import DECIMALS, INTERVAL_MS, Catalog, Listing, Row
from tests.standin.weight import WeightMeter
from tests.standin.wire import BinanceError, decimal

DEFAULT_LIMIT: Final = 500
MAX_LIMIT: Final = 1000


def binance_row(row: Row, interval_ms: int) -> list[Any]:
    """Return Binance's 12-field kline row for a candle; fields the files lack are synthesized.

    Quote volume is volume x typical price, trades grow with the volume's square root, and
    takers bought half of it: plausible numbers that ccxt ignores anyway.
    """
    t, o, h, lo, c, v = row
    quote_volume = round(v * (h + lo + c) / 3, DECIMALS)
    trades = max(1, round(v**0.5)) if v > 0 else 0
    return [
        t,
        decimal(o),
        decimal(h),
        decimal(lo),
        decimal(c),
        decimal(v),
        t + interval_ms - 1,
        decimal(quote_volume),
        trades,
        decimal(round(v / 2, DECIMALS)),
        decimal(round(quote_volume / 2, DECIMALS)),
        "0",
    ]


def partial_row(row: Row, fraction: float) -> Row:
    """Return the candle as it stood `fraction` (0..1) of the way through its interval."""
    t, o, h, lo, c, v = row
    close = o + (c - o) * fraction
    high = max(o, close, o + (h - o) * fraction)
    low = min(o, close, o + (lo - o) * fraction)
    return (
        t,
        o,
        round(high, DECIMALS),
        round(low, DECIMALS),
        round(close, DECIMALS),
        round(v * fraction, DECIMALS),
    )


def revised_row(row: Row, revision: Revision) -> Row:
    """Return the candle with a revision's close and volume (default: close x 1.001, volume + 1)."""
    t, o, h, lo, c, v = row
    close = round(revision.close if revision.close is not None else c * 1.001, DECIMALS)
    volume = round(revision.volume if revision.volume is not None else v + 1, DECIMALS)
    return (t, o, max(h, close), min(lo, close), close, volume)


def _integer(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise BinanceError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(text)


def _mandatory(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise BinanceError(
            400,
            -1102,
            f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
        )
    return value


@dataclass(frozen=True)
class KlinesQuery:
    """A klines request after Binance's validation."""

    listing: Listing
    interval: str
    start_time: int | None
    end_time: int | None
    limit: int


def parse_klines_query(catalog: Catalog, params: Mapping[str, str]) -> KlinesQuery:
    """Validate klines query parameters as Binance does; raise BinanceError on a bad request."""
    symbol = _mandatory(params, "symbol")
    interval = _mandatory(params, "interval")
    listing = catalog.listings.get(symbol)
    if listing is None:
        raise BinanceError(400, -1121, "Invalid symbol.")
    if interval not in INTERVAL_MS or interval not in listing.intervals():
        raise BinanceError(400, -1120, "Invalid interval.")
    start, end = _integer(params, "startTime"), _integer(params, "endTime")
    if start is not None and end is not None and start > end:
        raise BinanceError(400, -1023, "Start time is greater than end time.")
    limit = _integer(params, "limit")
    if limit is not None and limit < 1:
        raise BinanceError(400, -1100, "Illegal characters found in parameter 'limit'.")
    limit = DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT)
    return KlinesQuery(listing, interval, start, end, limit)


@dataclass
class Market:
    """Everything a stand-in serves and controls; shared by the server thread and the tests."""

    catalog: Catalog
    clock: Clock
    faults: FaultBoard = field(default_factory=FaultBoard)
    log: RequestLog = field(default_factory=RequestLog)
    weight: WeightMeter = field(default_factory=WeightMeter)
    open_candle: bool = True  # serve the still-open candle as the last row, as Binance does
    account: Account = field(default_factory=Account)  # orders.py: the signed spot endpoints

    def klines(self, query: KlinesQuery) -> list[list[Any]]:
        """Return Binance kline rows for a validated query at the clock's now."""
        market_id, interval = query.listing.market_id, query.interval
        series = self.catalog.series(market_id, interval)
        now, step = self.clock.now_ms(), series.interval_ms
        times = series.open_times
        visible = bisect.bisect_right(times, now)
        if not self.open_candle and visible and times[visible - 1] + step > now:
            visible -= 1
        low = 0 if query.start_time is None else bisect.bisect_left(times, query.start_time)
        high = visible
        if query.end_time is not None:
            high = min(high, bisect.bisect_right(times, query.end_time))
        hidden = self.faults.omitted_times(market_id, interval)
        # from startTime forwards, else from the newest backwards, as Binance pages
        walk = range(low, high) if query.start_time is not None else range(high - 1, low - 1, -1)
        chosen: list[int] = []
        hit: set[int] = set()
        for index in walk:
            if len(chosen) >= query.limit:
                break
            if times[index] in hidden:
                hit.add(times[index])
            else:
                chosen.append(index)
        if hit:
            self.faults.use_omissions(market_id, interval, hit)
        chosen.sort()
        return [
            binance_row(self._served(series.rows[i], market_id, interval, now, step), step)
            for i in chosen
        ]

    def _served(self, row: Row, market_id: str, interval: str, now: int, step: int) -> Row:
        if row[0] + step > now:
            return partial_row(row, (now - row[0]) / step)
        revision = self.faults.revision_for(market_id, interval, row[0])
        return row if revision is None else revised_row(row, revision)

    def last_price(self, listing: Listing) -> float:
        """Return the price an order trades at now: the close of the candle the clock is in.

        The candle is the symbol's finest; while it is open its close is the partial one that
        klines serves (with `open_candle` off, the previous candle's close). Revisions are not
        applied. BinanceError "Market is closed." before the first candle opens.
        """
        series = self.catalog.series(listing.market_id, listing.native_interval)
        now, step = self.clock.now_ms(), series.interval_ms
        visible = bisect.bisect_right(series.open_times, now)
        if not self.open_candle and visible and series.open_times[visible - 1] + step > now:
            visible -= 1
        if not visible:
            raise BinanceError(400, -1013, "Market is closed.")
        row = series.rows[visible - 1]
        if row[0] + step > now:
            row = partial_row(row, (now - row[0]) / step)
        return row[4]

    def exchange_info(self) -> dict[str, Any]:
        """Return GET /api/v3/exchangeInfo: every listing as a trading spot symbol."""
        return exchange_info(self.catalog, self.clock.now_ms(), self.weight.limit)
