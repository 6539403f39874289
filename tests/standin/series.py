"""Candle series of the stand-in: the team's real OHLCV files in -> symbols on one timeline out.

What is served, and why:

- every real file under its real name (ETH_BTC-1m.json -> ETH/BTC, Binance id ETHBTC);
- from each real 1m file, derived symbols named BASE + a letter (ETHA/BTC, ETHB/BTC, ETHC/BTC)
  whose prices are the real ones times a whole number (2, 3, 5), volumes unchanged: distinct
  markets with realistic moves, including the real no-trade gaps (XMRA/BTC misses the minutes
  XMR/BTC misses);
- every series shifted by a whole number of its timeframe so that all of them close their last
  candle at one common `end_ms` (by default the latest real close, rounded up to a whole day):
  one clock then applies to every symbol;
- intervals above a file's own timeframe are aggregated from it (first open, highest high,
  lowest low, last close, summed volume; buckets aligned to the epoch as Binance does). Where a
  real file exists for an interval (XRP_ETH-5m.json) it is served instead of an aggregate.

Prices and volumes are kept rounded to 8 decimals, the precision of the files and of Binance's
decimal strings, so that a served string parses back to exactly the stored number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final, TypeAlias

Row: TypeAlias = tuple[int, float, float, float, float, float]  # ccxt: ms, o, h, l, c, v

INTERVAL_MS: Final[dict[str, int]] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
DAY_MS: Final = 86_400_000
DERIVED_SCALES: Final[tuple[tuple[str, int], ...]] = (("A", 2), ("B", 3), ("C", 5))
DECIMALS: Final = 8

_FILE_NAME: Final = re.compile(r"(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<tf>\w+)\.json")


@dataclass(frozen=True)
class Listing:
    """One symbol the stand-in lists: names, where its candles come from, how they are scaled."""

    base: str
    quote: str
    scale: int  # price multiplier applied to the real file; 1: the real prices
    files: dict[str, Path]  # interval -> real file served for it (at least one)

    @property
    def market_id(self) -> str:
        """Return the Binance symbol id, e.g. ETHBTC."""
        return self.base + self.quote

    @property
    def symbol(self) -> str:
        """Return the unified ccxt symbol, e.g. ETH/BTC."""
        return f"{self.base}/{self.quote}"

    @property
    def native_interval(self) -> str:
        """Return the finest interval a real file gives; coarser ones are aggregated from it."""
        return min(self.files, key=INTERVAL_MS.__getitem__)

    def intervals(self) -> list[str]:
        """Return every interval this symbol can serve, finest first."""
        native_ms = INTERVAL_MS[self.native_interval]
        return [name for name, ms in INTERVAL_MS.items() if ms % native_ms == 0]


@dataclass(frozen=True)
class Series:
    """Candles of one symbol and interval, ascending by open time, on the common timeline."""

    interval_ms: int
    rows: Sequence[Row]
    open_times: Sequence[int] = field(repr=False)

    @classmethod
    def of(cls, interval_ms: int, rows: Sequence[Row]) -> Series:
        """Build a series from rows already sorted by open time."""
        return cls(interval_ms, rows, [row[0] for row in rows])


@cache
def _read_file(path: Path) -> tuple[Row, ...]:
    """Read a real ccxt JSON file once per process (the files are read-only)."""
    raw: list[list[float]] = json.loads(path.read_bytes())
    return tuple((int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in raw)


def _scaled(rows: Iterable[Row], scale: int) -> list[Row]:
    if scale == 1:
        return list(rows)

    def price(value: float) -> float:
        return round(value * scale, DECIMALS)

    return [(t, price(o), price(h), price(lo), price(c), v) for t, o, h, lo, c, v in rows]


def _shifted(rows: Sequence[Row], interval_ms: int, end_ms: int) -> list[Row]:
    """Shift rows by a whole number of intervals so that the last one closes at `end_ms`."""
    if not rows:
        return []
    shift = end_ms - (rows[-1][0] + interval_ms)
    if shift % interval_ms:
        raise ValueError(f"end {end_ms} is not aligned to the interval {interval_ms} ms")
    return [(t + shift, o, h, lo, c, v) for t, o, h, lo, c, v in rows]


def aggregate(rows: Sequence[Row], interval_ms: int) -> list[Row]:
    """Merge finer candles into `interval_ms` buckets aligned to the epoch; no empty buckets."""
    merged: list[Row] = []
    for t, o, h, lo, c, v in rows:
        bucket = t - t % interval_ms
        if merged and merged[-1][0] == bucket:
            bt, bo, bh, bl, _, bv = merged[-1]
            merged[-1] = (bt, bo, max(bh, h), min(bl, lo), c, round(bv + v, DECIMALS))
        else:
            merged.append((bucket, o, h, lo, c, v))
    return merged


class Catalog:
    """Every listing with its candles on the common timeline; series are built on first use."""

    def __init__(self, listings: Sequence[Listing], end_ms: int) -> None:
        """Serve `listings`, each series closing its last candle at `end_ms`."""
        if end_ms % DAY_MS:
            raise ValueError(f"end_ms {end_ms} must be a whole UTC day so every interval aligns")
        self.end_ms = end_ms
        self.listings: dict[str, Listing] = {item.market_id: item for item in listings}
        self._series: dict[tuple[str, str], Series] = {}

    def listing(self, symbol: str) -> Listing | None:
        """Return the listing for a Binance id (ETHBTC) or a unified symbol (ETH/BTC), or None."""
        return self.listings.get(symbol.replace("/", "").upper())

    def series(self, market_id: str, interval: str) -> Series:
        """Return the candles of a listed symbol at an interval it supports (KeyError otherwise)."""
        key = (market_id, interval)
        if key not in self._series:
            listing = self.listings[market_id]
            if interval not in listing.intervals():
                raise KeyError(f"{market_id} has no {interval} candles")
            self._series[key] = Series.of(INTERVAL_MS[interval], self._build(listing, interval))
        return self._series[key]

    def _build(self, listing: Listing, interval: str) -> list[Row]:
        source = interval if interval in listing.files else listing.native_interval
        source_ms = INTERVAL_MS[source]
        rows = _shifted(_read_file(listing.files[source]), source_ms, self.end_ms)
        rows = _scaled(rows, listing.scale)
        return rows if source == interval else aggregate(rows, INTERVAL_MS[interval])


def real_listings(data_dir: Path) -> list[Listing]:
    """Return one listing per real market in `data_dir`, plus the derived ones of each 1m file."""
    files: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(data_dir.glob("*.json")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None or match["tf"] not in INTERVAL_MS:
            continue
        files.setdefault((match["base"], match["quote"]), {})[match["tf"]] = path
    listings = [Listing(base, quote, 1, by_tf) for (base, quote), by_tf in files.items()]
    derived = [
        Listing(base + letter, quote, scale, {"1m": by_tf["1m"]})
        for (base, quote), by_tf in files.items()
        if "1m" in by_tf
        for letter, scale in DERIVED_SCALES
    ]
    return listings + derived


def common_end_ms(listings: Iterable[Listing]) -> int:
    """Return the latest real close time among the listings' files, rounded up to a whole day."""
    latest = 0
    for listing in listings:
        for interval, path in listing.files.items():
            rows = _read_file(path)
            if rows:
                latest = max(latest, rows[-1][0] + INTERVAL_MS[interval])
    return -(-latest // DAY_MS) * DAY_MS


def load_catalog(data_dir: Path, *, end_ms: int | None = None) -> Catalog:
    """Build the catalog of `data_dir`'s files, ending at `end_ms` (default: `common_end_ms`)."""
    listings = real_listings(data_dir)
    if not listings:
        raise FileNotFoundError(f"no OHLCV files like ETH_BTC-1m.json in {data_dir}")
    return Catalog(listings, common_end_ms(listings) if end_ms is None else end_ms)
