"""What a backtest's fills add up to (pure): fills in, round trips and an equity curve out.

A round trip (`Trade`) runs from an entry fill to the fill that leaves its symbol flat; its
partial exits (take-profit ladder, then a stop) are its `exits`. Its `pnl` is what the trader
realised over it: (exit price - entry price) x quantity on each exit, less every fee, the
entry's included, so the results of all round trips add up to the account's realised PnL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.executor.orders import Fill

F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ExitLeg:
    """One exit fill of a round trip; `price` includes slippage, `fee` in quote currency."""

    time_ms: int
    kind: str
    price: float
    quantity: float
    fee: float


@dataclass(frozen=True, slots=True)
class Trade:
    """A long round trip: one entry, then its exits in order (`closed` once flat)."""

    symbol: str
    signal_id: str | None
    entry_time_ms: int
    entry_price: float
    quantity: float
    entry_fee: float
    exits: tuple[ExitLeg, ...]
    closed: bool

    @property
    def exit_time_ms(self) -> int | None:
        """Return the time of the last exit, None before any."""
        return self.exits[-1].time_ms if self.exits else None

    @property
    def exit_price(self) -> float | None:
        """Return the quantity-weighted mean exit price, None before any exit."""
        sold = sum(leg.quantity for leg in self.exits)
        if not sold > 0:
            return None
        return sum(leg.price * leg.quantity for leg in self.exits) / sold

    @property
    def exit_kind(self) -> str | None:
        """Return the kind of the last exit (what left the symbol flat when closed)."""
        return self.exits[-1].kind if self.exits else None

    @property
    def fees(self) -> float:
        """Return every fee paid on the round trip, the entry's included."""
        return self.entry_fee + sum(leg.fee for leg in self.exits)

    @property
    def pnl(self) -> float:
        """Return the realised result: exits against the entry price, less every fee."""
        gross = sum((leg.price - self.entry_price) * leg.quantity for leg in self.exits)
        return gross - self.fees

    def as_dict(self) -> dict[str, object]:
        """Return the round trip as plain JSON-ready data, derived figures included."""
        return {
            "symbol": self.symbol,
            "side": "long",
            "signal_id": self.signal_id,
            "entry_time_ms": self.entry_time_ms,
            "entry_price": self.entry_price,
            "quantity": self.quantity,
            "exit_time_ms": self.exit_time_ms,
            "exit_price": self.exit_price,
            "exit_kind": self.exit_kind,
            "fees": self.fees,
            "pnl": self.pnl,
            "return": self.pnl / (self.entry_price * self.quantity),
            "closed": self.closed,
            "exits": [
                {
                    "time_ms": leg.time_ms,
                    "kind": leg.kind,
                    "price": leg.price,
                    "quantity": leg.quantity,
                    "fee": leg.fee,
                }
                for leg in self.exits
            ],
        }


def round_trips(fills: Sequence[Fill], still_held: frozenset[str]) -> list[Trade]:
    """Group fills (in execution order) into round trips, in the order they were entered.

    The last round trip of a symbol in `still_held` is open; every other one is closed.
    """
    entries: list[Fill] = []
    legs: list[list[ExitLeg]] = []
    current: dict[str, int] = {}  # symbol -> index of its latest round trip
    for fill in fills:
        if fill.kind == "entry":
            current[fill.symbol] = len(entries)
            entries.append(fill)
            legs.append([])
        else:
            legs[current[fill.symbol]].append(
                ExitLeg(fill.time_ms, fill.kind, fill.price, fill.quantity, fill.fee)
            )
    open_ones = {current[symbol] for symbol in still_held if symbol in current}
    return [
        Trade(
            symbol=entry.symbol,
            signal_id=entry.signal_id,
            entry_time_ms=entry.time_ms,
            entry_price=entry.price,
            quantity=entry.quantity,
            entry_fee=entry.fee,
            exits=tuple(exits),
            closed=index not in open_ones,
        )
        for index, (entry, exits) in enumerate(zip(entries, legs, strict=True))
    ]


@dataclass(frozen=True, slots=True)
class MarketPrices:
    """One market's candles as the equity curve needs them."""

    symbol: str
    times_ms: I64Array
    close: F64Array
    timeframe_ms: int


def _holding_rows(market: MarketPrices, trades: Sequence[Trade]) -> tuple[BoolArray, F64Array]:
    """Return per candle whether a holding was open during (part of) it, and the quantity
    held after its fills."""
    size = market.times_ms.size
    mine = [trade for trade in trades if trade.symbol == market.symbol]
    legs = [leg for trade in mine for leg in trade.exits]
    entry_rows = np.searchsorted(market.times_ms, [trade.entry_time_ms for trade in mine])
    last_times = [t.exits[-1].time_ms if t.closed else market.times_ms[-1] + 1 for t in mine]
    last_rows = np.searchsorted(market.times_ms, np.array(last_times, dtype=np.int64))
    leg_rows = np.searchsorted(market.times_ms, [leg.time_ms for leg in legs])
    # +1 from the entry candle on, -1 after the last exit's candle (or past the end if open)
    during = np.bincount(entry_rows, minlength=size + 1) - np.bincount(
        np.minimum(last_rows + 1, size), minlength=size + 1
    )
    after = np.bincount(entry_rows, minlength=size + 1) - np.bincount(last_rows, minlength=size + 1)
    moves = np.bincount(
        entry_rows, weights=[trade.quantity for trade in mine], minlength=size + 1
    ) - np.bincount(leg_rows, weights=[leg.quantity for leg in legs], minlength=size + 1)
    held_after = np.cumsum(after[:size]) > 0
    # The exits leave a rounding residue in the running sum: a flat candle holds nothing.
    quantity = np.where(held_after, np.cumsum(moves[:size]), 0.0)
    return np.cumsum(during[:size]) > 0, quantity


def _grid(markets: Sequence[MarketPrices]) -> I64Array:
    """Return every open time of any market, once, ascending."""
    if len(markets) == 1:
        return markets[0].times_ms
    times = np.sort(np.concatenate([market.times_ms for market in markets]))
    unique: I64Array = times[np.append(True, np.diff(times) != 0)]
    return unique


def equity_curve(
    markets: Sequence[MarketPrices],
    trades: Sequence[Trade],
    initial_equity: float,
) -> tuple[I64Array, F64Array, BoolArray]:
    """Return the time grid (every candle open time of any market), the equity at the close
    of each grid candle, and whether a holding was open during (part of) it.

    Equity is cash plus every holding marked at its market's latest close, as the trader counts
    it; it only changes at candles of held markets, so it is computed from the fills at once.
    """
    grid = _grid(markets)
    value = np.zeros(grid.size)
    exposed = np.zeros(grid.size, dtype=np.bool_)
    for market in markets:
        during, quantity = _holding_rows(market, trades)
        rows = np.searchsorted(market.times_ms, grid, side="right") - 1
        known = rows >= 0
        covering = known & (grid < market.times_ms[rows] + market.timeframe_ms)
        value += np.where(known, (quantity * market.close)[rows], 0.0)
        exposed |= covering & during[rows]
    legs = [leg for trade in trades for leg in trade.exits]
    entry_cost = [trade.entry_price * trade.quantity + trade.entry_fee for trade in trades]
    cash_moves = np.bincount(
        np.searchsorted(grid, [leg.time_ms for leg in legs]),
        weights=[leg.price * leg.quantity - leg.fee for leg in legs],
        minlength=grid.size,
    ) - np.bincount(
        np.searchsorted(grid, [trade.entry_time_ms for trade in trades]),
        weights=entry_cost,
        minlength=grid.size,
    )
    return grid, initial_equity + np.cumsum(cash_moves) + value, exposed
