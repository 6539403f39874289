"""One paper account's pure state machine: signals and closed candles in, decisions and fills out.

The single implementation of trading that backtests and the live executor share. Long-only,
at most one holding per symbol, many symbols, one timeframe per symbol.

Timing, so that nothing looks ahead:

- `on_signal` on candle t decides at once (risk checks use t's close as the price estimate)
  and leaves a PENDING market order. It fills on the first candle of that symbol opening at or
  after t's close, at that candle's OPEN moved against the trader by the slippage; never at t.
- `on_candle` is called for each closed candle of a symbol, in time order (a candle not newer
  than the last one seen for its symbol is ignored). It first fills the symbol's pending order,
  then steps the holding through the candle with `exits.step` (the entry candle included: the
  entry filled at its open). Stops and the time stop fill with slippage against the trader,
  take-profits at their level without slippage; every fill pays `fee_bps` of its notional.
- Call `on_candle(t)` before `on_signal(t)`; the other order gives the same fills.

Live (`live=True`), the exchange fills orders, not candles: a pending order waits for
`fill_external` (the exchange's fills) or `reject`, and `on_candle` fills nothing. Exit rules
still step each holding on its candles, but a hit becomes a pending market sell (one per candle,
of every hit's quantity) and the holding changes only when that sell fills. While a symbol has
an order out, its exits are not stepped (its candles still mark it).

Realised PnL counts the entry fee when the entry fills and (exit - entry price) x quantity less
the exit fee on each exit; cash never goes below zero (an entry is cut to what cash can pay).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec

from services.executor.broker import fee_of, slipped_price
from services.executor.exits import (
    EPSILON,
    ExitHit,
    ExitKind,
    ExitRules,
    Holding,
    effective_stop,
    open_holding,
    step,
    stop_price,
)
from services.executor.orders import Decision, Fill, PendingOrder
from services.executor.risk import DAY_MS, BookView, RiskLimits, entry_blocked
from services.executor.sizing import Sizing, quantity
from shared.messages import TIMEFRAME_MS, CandleClosed, OrderFilled, SignalEmitted, client_order_id

SNAPSHOT_VERSION = 1

__all__ = ["Decision", "Fill", "PendingOrder", "Trader"]


def _json_data(value: Holding | PendingOrder) -> dict[str, Any]:
    """Return `value` as the dict JSON text decodes to (tuples become lists), floats exact."""
    data: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(value))
    return data


class Trader:
    """One account: cash, holdings and pending orders, driven by signals and candles."""

    def __init__(
        self,
        rules: ExitRules,
        sizing: Sizing,
        limits: RiskLimits,
        *,
        slippage_bps: float,
        fee_bps: float,
        equity: float,
        exchange: str = "paper",
        live: bool = False,
    ) -> None:
        for name, value in (("slippage_bps", slippage_bps), ("fee_bps", fee_bps)):
            if not (math.isfinite(value) and 0 <= value < 10_000):
                raise ValueError(f"{name} must be in [0, 10000), got {value!r}")
        if not (math.isfinite(equity) and equity > 0):
            raise ValueError(f"equity must be finite and > 0, got {equity!r}")
        if sizing.mode == "risk" and rules.stop_loss_pct is None and rules.stop_loss_atr is None:
            raise ValueError("risk sizing needs a stop-loss: set stop_loss_pct or stop_loss_atr")
        self.rules = rules
        self.sizing = sizing
        self.limits = limits  # replace it to flip the kill switch or change a limit
        self.slippage_bps = slippage_bps
        self.fee_bps = fee_bps
        self.exchange = exchange
        self.live = live
        self.initial_equity = equity
        self._cash = equity
        self._realized = 0.0
        self._day = 0  # the UTC day (epoch days) `_realized_today` belongs to
        self._realized_today = 0.0
        self._holdings: dict[str, Holding] = {}
        self._pending: dict[str, PendingOrder] = {}
        self._marks: dict[str, float] = {}  # last close of each held symbol
        self._last_candle_ms: dict[str, int] = {}  # open time of the newest candle per symbol
        self._last_closed_ms: dict[str, int] = {}  # when each symbol's last position closed
        self._holdings_view = MappingProxyType(self._holdings)
        self._pending_view = MappingProxyType(self._pending)

    @property
    def cash(self) -> float:
        """Quote currency not in holdings."""
        return self._cash

    @property
    def equity(self) -> float:
        """Cash plus the holdings marked at the last close seen for their symbol."""
        marks = self._marks
        return self._cash + sum(h.quantity * marks[s] for s, h in self._holdings.items())

    @property
    def realized_pnl(self) -> float:
        """Realised PnL since the start, fees included."""
        return self._realized

    @property
    def holdings(self) -> Mapping[str, Holding]:
        """Open holdings by symbol (a live read-only view)."""
        return self._holdings_view

    @property
    def pending(self) -> Mapping[str, PendingOrder]:
        """Pending market orders by symbol (a live read-only view)."""
        return self._pending_view

    def is_active(self, symbol: str) -> bool:
        """Return True while `symbol` has a holding or a pending order (it needs its candles)."""
        return symbol in self._holdings or symbol in self._pending

    def is_new(self, symbol: str, open_time_ms: int) -> bool:
        """Return True if a candle of `symbol` opening at `open_time_ms` is newer than the last
        one applied (`on_candle` ignores the others: redeliveries change nothing)."""
        last = self._last_candle_ms.get(symbol)
        return last is None or open_time_ms > last

    def book(self, now_ms: int) -> BookView:
        """Return what the risk checks see at `now_ms`; pending entries count as open."""
        notionals = {s: h.quantity * self._marks[s] for s, h in self._holdings.items()}
        for symbol, order in self._pending.items():
            if order.side == "buy":
                notionals[symbol] = order.quantity * order.price_estimate
        today = self._realized_today if now_ms // DAY_MS == self._day else 0.0
        return BookView(notionals, dict(self._last_closed_ms), today)

    def on_signal(
        self, signal: SignalEmitted, *, atr: float, now_ms: int | None = None
    ) -> list[Decision]:
        """Decide `signal` now: leave a pending market order for the next candle, or skip it.

        `atr` is the signal candle's ATR. `now_ms` defaults to the signal candle's close (the
        live loop passes its clock so that stale data is seen).
        """
        closed_ms = signal.open_time_ms + TIMEFRAME_MS[signal.timeframe]
        now = closed_ms if now_ms is None else now_ms
        if signal.side == "sell":
            return [self._decide_exit(signal, closed_ms)]
        return [self._decide_entry(signal, atr, closed_ms, now)]

    def _decide_entry(
        self, signal: SignalEmitted, atr: float, closed_ms: int, now_ms: int
    ) -> Decision:
        symbol, price = signal.symbol, signal.price
        reason = None
        if symbol in self._holdings:
            reason = "already_long"
        elif symbol in self._pending:
            reason = "pending_order"
        elif not (math.isfinite(price) and price > 0):
            reason = "no_price"
        elif self.rules.needs_atr and not (math.isfinite(atr) and atr > 0):
            reason = "no_atr"
        if reason is not None:
            return Decision(signal.signal_id, symbol, "buy", "skipped", reason)
        size = self._entry_size(price, atr)
        # The signal's own candle is the newest one known unless a later one was seen.
        newest_open_ms = max(self._last_candle_ms.get(symbol, 0), signal.open_time_ms)
        reason = entry_blocked(
            self.limits,
            self.book(now_ms),
            symbol=symbol,
            notional=size * price,
            now_ms=now_ms,
            last_candle_ms=newest_open_ms + closed_ms - signal.open_time_ms,
        )
        if reason is None and size <= EPSILON:
            reason = "insufficient_cash"
        if reason is not None:
            return Decision(signal.signal_id, symbol, "buy", "skipped", reason)
        order_id = client_order_id(signal.signal_id)
        known_atr = atr if math.isfinite(atr) and atr > 0 else 0.0
        self._pending[symbol] = PendingOrder(
            symbol, "buy", size, order_id, signal.signal_id, closed_ms, price, known_atr, "entry"
        )
        return Decision(signal.signal_id, symbol, "buy", "pending", None, order_id, size)

    def _decide_exit(self, signal: SignalEmitted, closed_ms: int) -> Decision:
        symbol = signal.symbol
        holding = self._holdings.get(symbol)
        if holding is None:
            return Decision(signal.signal_id, symbol, "sell", "skipped", "no_position")
        if symbol in self._pending:
            return Decision(signal.signal_id, symbol, "sell", "skipped", "pending_order")
        order_id = client_order_id(signal.signal_id)
        self._pending[symbol] = PendingOrder(
            symbol, "sell", holding.quantity, order_id, signal.signal_id, closed_ms,
            signal.price, 0.0, "signal",
        )  # fmt: skip
        return Decision(
            signal.signal_id, symbol, "sell", "pending", None, order_id, holding.quantity
        )

    def _entry_size(self, price: float, atr: float) -> float:
        """Return what the sizing rule buys at `price`, cut to the cash not yet promised to
        pending entries (each at its estimated cost, slippage and fee included)."""
        size = quantity(
            self.sizing,
            price=price,
            equity=self.equity,
            stop_price=stop_price(price, atr, self.rules),
        )
        unit = (1 + self.slippage_bps / 10_000) * (1 + self.fee_bps / 10_000)
        promised = sum(
            o.quantity * o.price_estimate * unit for o in self._pending.values() if o.side == "buy"
        )
        return min(size, max(0.0, self._cash - promised) / (price * unit))

    def on_candle(self, candle: CandleClosed, *, atr: float = math.nan) -> list[Fill]:
        """Apply one closed candle of a symbol: fill its pending order, then step its holding.

        `atr` (this candle's) is accepted for symmetry and not used: ATR-based levels are set
        at entry from the signal candle's ATR, since this candle's ATR would look ahead.
        """
        symbol = candle.symbol
        time_ms = candle.open_time_ms
        last = self._last_candle_ms.get(symbol)
        if last is not None and time_ms <= last:
            return []
        self._last_candle_ms[symbol] = time_ms
        fills: list[Fill] = []
        order = self._pending.get(symbol)
        if order is not None and not self.live and time_ms >= order.not_before_ms:
            del self._pending[symbol]
            if order.side == "buy":
                self._fill_entry(order, candle, fills)
            else:
                self._fill_signal_exit(order, candle, fills)
        holding = self._holdings.get(symbol)
        if holding is None:
            return fills
        self._marks[symbol] = candle.close
        if self.live and symbol in self._pending:
            return fills  # its order is out: the exits wait for its fill
        after, hits = step(
            holding, time_ms, candle.open, candle.high, candle.low, candle.close, self.rules
        )
        if hits and self.live:
            self._pending[symbol] = _exit_order(holding, after, hits)
            return fills
        if hits:
            self._fill_exits(holding, hits, fills)
        if after is None:
            self._close(symbol, time_ms)
        else:
            self._holdings[symbol] = after
        return fills

    def _fill_entry(self, order: PendingOrder, candle: CandleClosed, fills: list[Fill]) -> None:
        price = slipped_price(candle.open, "buy", self.slippage_bps)
        size = order.quantity
        if price * size * (1 + self.fee_bps / 10_000) > self._cash:
            size = self._cash / (price * (1 + self.fee_bps / 10_000))
        if size <= EPSILON:
            return  # a gap up left no cash for it: the order is dropped
        fee = fee_of(price, size, self.fee_bps)
        self._cash = max(0.0, self._cash - price * size - fee)
        self._add_realized(-fee, candle.open_time_ms)
        symbol = order.symbol
        self._holdings[symbol] = open_holding(
            symbol, candle.open_time_ms, price, size, order.atr, self.rules
        )
        fills.append(
            Fill(symbol, "buy", "entry", price, size, fee, candle.open_time_ms,
                 order.client_order_id, order.signal_id)
        )  # fmt: skip

    def _fill_signal_exit(
        self, order: PendingOrder, candle: CandleClosed, fills: list[Fill]
    ) -> None:
        holding = self._holdings.get(order.symbol)
        if holding is None:
            return
        price = slipped_price(candle.open, "sell", self.slippage_bps)
        fills.append(
            self._sell(holding, "signal", price, holding.quantity, candle.open_time_ms,
                       order.client_order_id, order.signal_id)
        )  # fmt: skip
        self._close(order.symbol, candle.open_time_ms)

    def _fill_exits(self, holding: Holding, hits: list[ExitHit], fills: list[Fill]) -> None:
        for number, hit in enumerate(hits):
            price = hit.price
            if hit.kind != "take_profit":
                price = slipped_price(price, "sell", self.slippage_bps)
            # Stable and unique per exit: the holding (symbol, entry time) and the exit's place.
            order_id = client_order_id(
                f"{holding.symbol}:{holding.entry_time_ms}:{hit.kind}:{hit.time_ms}:{number}"
            )
            fills.append(
                self._sell(holding, hit.kind, price, hit.quantity, hit.time_ms, order_id, None)
            )

    def _sell(
        self,
        holding: Holding,
        kind: ExitKind,
        price: float,
        size: float,
        time_ms: int,
        order_id: str,
        signal_id: str | None,
    ) -> Fill:
        fee = fee_of(price, size, self.fee_bps)
        self._cash += price * size - fee
        self._add_realized((price - holding.entry_price) * size - fee, time_ms)
        return Fill(holding.symbol, "sell", kind, price, size, fee, time_ms, order_id, signal_id)

    def fill_external(self, client_order_id: str, fills: Sequence[OrderFilled]) -> list[Fill]:
        """Apply the exchange's fills of a pending order that is done there (live); return
        them as this trader's fills. The order leaves the book even when nothing filled."""
        order = self._take_pending(client_order_id)
        symbol = order.symbol
        quantity = sum(f.quantity for f in fills)
        if quantity <= EPSILON:
            return []
        notional = sum(f.price * f.quantity for f in fills)
        fee = sum(f.fee for f in fills)
        # the trader's clock is the candles': the exchange's may differ (and does in replays)
        price, time_ms = notional / quantity, order.not_before_ms
        holding = self._holdings.get(symbol)
        if order.side == "buy":
            self._cash = max(0.0, self._cash - notional - fee)
            self._add_realized(-fee, time_ms)
            self._holdings[symbol] = open_holding(
                symbol, order.not_before_ms, price, quantity, order.atr, self.rules
            )
            self._marks[symbol] = price
        elif holding is not None:
            self._cash += notional - fee
            self._add_realized((price - holding.entry_price) * quantity - fee, time_ms)
            remaining = holding.quantity - quantity
            if order.after is None or remaining <= EPSILON:
                # a sell of the whole holding closes it: what the exchange did not take (an
                # amount below its lot size) stays on the account as dust
                self._close(symbol, time_ms)
            else:  # a partial exit: the rules' next state, with what is really left
                self._holdings[symbol] = dataclasses.replace(order.after, quantity=remaining)
        signal_id = order.signal_id if order.fill_kind in ("entry", "signal") else None
        return [
            Fill(symbol, f.side, order.fill_kind, f.price, f.quantity, f.fee, f.filled_at_ms,
                 client_order_id, signal_id)
            for f in fills
        ]  # fmt: skip

    def reject(self, client_order_id: str) -> PendingOrder:
        """Take a pending order the exchange refused off the book (live); a refused sell leaves
        its holding as it was, so its exits are stepped again on the next candle."""
        return self._take_pending(client_order_id)

    def close_dust(self, client_order_id: str) -> PendingOrder:
        """Take off the book a pending sell too small for the exchange to take (live), and
        close its holding: what is left is dust that stays on the account."""
        order = self._take_pending(client_order_id)
        if order.side == "sell" and order.symbol in self._holdings:
            self._close(order.symbol, order.not_before_ms)
        return order

    def _take_pending(self, client_order_id: str) -> PendingOrder:
        for symbol, order in self._pending.items():
            if order.client_order_id == client_order_id:
                del self._pending[symbol]
                return order
        raise KeyError(f"no pending order {client_order_id!r}")

    def _close(self, symbol: str, time_ms: int) -> None:
        del self._holdings[symbol]
        self._marks.pop(symbol, None)
        self._last_closed_ms[symbol] = time_ms

    def _add_realized(self, amount: float, time_ms: int) -> None:
        self._realized += amount
        day = time_ms // DAY_MS
        if day > self._day:
            self._day, self._realized_today = day, 0.0
        if day == self._day:
            self._realized_today += amount

    def snapshot(self) -> dict[str, Any]:
        """Return the whole state as plain JSON-able data (see `Trader.restore`)."""
        return {
            "version": SNAPSHOT_VERSION,
            "exchange": self.exchange,
            "live": self.live,
            "initial_equity": self.initial_equity,
            "cash": self._cash,
            "realized_pnl": self._realized,
            "day": self._day,
            "realized_today": self._realized_today,
            "holdings": [_json_data(h) for h in self._holdings.values()],
            "pending": [_json_data(p) for p in self._pending.values()],
            "marks": dict(self._marks),
            "last_candle_ms": dict(self._last_candle_ms),
            "last_closed_ms": dict(self._last_closed_ms),
            "levels": self.levels(),  # for readers (the dashboard); `restore` ignores it
        }

    def levels(self) -> list[dict[str, Any]]:
        """Return each holding's exit levels as of its last candle: the stop in force (fixed,
        breakeven or trailing, whichever is highest) and the remaining take-profit ladder."""
        levels = []
        for holding in self._holdings.values():
            stop, kind = effective_stop(holding, self.rules)
            levels.append(
                {
                    "symbol": holding.symbol,
                    "entry_time_ms": holding.entry_time_ms,
                    "entry_price": holding.entry_price,
                    "quantity": holding.quantity,
                    "stop": stop,
                    "stop_kind": kind if stop is not None else None,
                    "targets": [list(target) for target in holding.targets],
                    "breakeven_done": holding.breakeven_done,
                    "candles_held": holding.candles_held,
                    "mark": self._marks.get(holding.symbol),
                }
            )
        return levels

    @classmethod
    def restore(
        cls,
        snapshot: Mapping[str, Any],
        rules: ExitRules,
        sizing: Sizing,
        limits: RiskLimits,
        *,
        slippage_bps: float,
        fee_bps: float,
        live: bool = False,
    ) -> Trader:
        """Return a trader in the state `snapshot` recorded; it continues as if never stopped.

        The rules, sizing, limits and costs are configuration, passed again. A paper account
        is never continued live, nor a live one on paper: its pending orders would go to the
        wrong place.
        """
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown trader snapshot version {snapshot.get('version')!r}")
        saved_live = bool(snapshot.get("live", False))
        if saved_live != live:
            saved, asked = ("live", "paper") if saved_live else ("paper", "live")
            raise ValueError(
                f"account {snapshot['exchange']!r} was saved trading {saved}; it cannot go on "
                f"{asked}: use another account name"
            )
        trader = cls(
            rules, sizing, limits, slippage_bps=slippage_bps, fee_bps=fee_bps,
            equity=float(snapshot["initial_equity"]), exchange=str(snapshot["exchange"]),
            live=live,
        )  # fmt: skip
        trader._cash = float(snapshot["cash"])
        trader._realized = float(snapshot["realized_pnl"])
        trader._day = int(snapshot["day"])
        trader._realized_today = float(snapshot["realized_today"])
        for raw in snapshot["holdings"]:
            holding = msgspec.convert(raw, Holding)
            trader._holdings[holding.symbol] = holding
        for raw in snapshot["pending"]:
            order = msgspec.convert(raw, PendingOrder)
            trader._pending[order.symbol] = order
        trader._marks.update({s: float(v) for s, v in snapshot["marks"].items()})
        trader._last_candle_ms.update({s: int(v) for s, v in snapshot["last_candle_ms"].items()})
        trader._last_closed_ms.update({s: int(v) for s, v in snapshot["last_closed_ms"].items()})
        return trader


def _exit_order(holding: Holding, after: Holding | None, hits: list[ExitHit]) -> PendingOrder:
    """The one market sell a live trader sends for a candle's exit hits."""
    last = hits[-1]
    order_id = client_order_id(
        f"{holding.symbol}:{holding.entry_time_ms}:{last.kind}:{last.time_ms}:live"
    )
    return PendingOrder(
        holding.symbol, "sell", sum(hit.quantity for hit in hits), order_id,
        f"{last.kind}:{order_id}", last.time_ms, last.price, 0.0, last.kind, after,
    )  # fmt: skip
