"""What the trader did, as records (pure): ticks in -> the trader stepped, and the orders, fills,
positions and decisions to store and publish out.

One `Ledger` gathers a batch of ticks. Per tick, in the backtester's order: the candle first
(pending orders fill at its open, exits on its range), then its signal (a pending market order
for the next candle, or a skip with its reason). A tick not newer than the last one the trader
saw for its symbol (a redelivery after a crash) changes nothing and decides nothing again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.executor.positions import apply_fill
from services.executor.trader import Decision, Fill, PendingOrder, Trader
from shared.messages import (
    TIMEFRAME_MS,
    CandleClosed,
    OrderFilled,
    OrderPlaced,
    PositionChanged,
    SignalEmitted,
    Tick,
)
from shared.store import CloseRequestRow, DecisionRow

STRATEGY = "stochrsi_bands"


def candle_of(tick: Tick) -> CandleClosed:
    """The closed candle a tick carries."""
    return CandleClosed(
        exchange=tick.exchange, symbol=tick.symbol, timeframe=tick.timeframe,
        open_time_ms=tick.open_time_ms, open=tick.open, high=tick.high, low=tick.low,
        close=tick.close, volume=0.0, source="ticks", closed_at_ms=tick.candle_closed_at_ms,
    )  # fmt: skip


def close_signal_of(request: CloseRequestRow, tick: Tick) -> SignalEmitted:
    """The sell signal a hand-made close request becomes on its symbol's next tick: decided
    like a strategy's sell (a market order filling at the next candle's open)."""
    return SignalEmitted(
        signal_id=f"manual-close:{request.symbol}:{request.requested_at_ms}", strategy="manual",
        exchange=tick.exchange, symbol=tick.symbol, timeframe=tick.timeframe,
        open_time_ms=tick.open_time_ms, side="sell", price=tick.close,
        reason=request.reason or "closed by hand", candle_closed_at_ms=tick.candle_closed_at_ms,
    )  # fmt: skip


def signal_of(tick: Tick) -> SignalEmitted:
    """The signal a tick carries (it must have one), as the signals service emitted it."""
    assert tick.side in ("buy", "sell")
    return SignalEmitted(
        signal_id=tick.signal_id, strategy=STRATEGY, exchange=tick.exchange, symbol=tick.symbol,
        timeframe=tick.timeframe, open_time_ms=tick.open_time_ms,
        side="buy" if tick.side == "buy" else "sell",
        price=tick.close, reason="", candle_closed_at_ms=tick.candle_closed_at_ms,
    )  # fmt: skip


@dataclass
class Ledger:
    """The records of one batch of ticks, and each market's position as they leave it."""

    positions: dict[str, PositionChanged]  # by symbol, carried from batch to batch
    orders: dict[str, tuple[OrderPlaced, str]] = field(default_factory=dict)  # new, by client id
    statuses: dict[str, str] = field(default_factory=dict)  # of orders placed in earlier batches
    fills: list[OrderFilled] = field(default_factory=list)
    changed: dict[str, PositionChanged] = field(default_factory=dict)
    decisions: list[DecisionRow] = field(default_factory=list)
    # close requests made by hand, by symbol, still to answer; answered ones move to `answered`
    closes: dict[str, CloseRequestRow] = field(default_factory=dict)
    answered: list[CloseRequestRow] = field(default_factory=list)
    ticks: int = 0

    def apply(self, trader: Trader, tick: Tick) -> None:
        """Step the trader through one tick and record what it did."""
        if not trader.is_new(tick.symbol, tick.open_time_ms):
            return  # seen before: a redelivery decides nothing again
        self.ticks += 1
        pending = trader.pending.get(tick.symbol)
        fills = trader.on_candle(candle_of(tick), atr=tick.atr)
        for fill in fills:
            self._filled(fill, tick)
        # a pending order taken off the book unfilled (a gap up left no cash for it)
        dropped = pending is not None and tick.symbol not in trader.pending
        if (
            dropped
            and pending
            and pending.client_order_id not in {f.client_order_id for f in fills}
        ):
            self._status(pending.client_order_id, "cancelled")
        exit_order = trader.pending.get(tick.symbol)
        if exit_order is not None and exit_order is not pending:  # live: an exit hit to sell
            self._exit_ordered(exit_order, tick)
        if tick.side:
            signal = signal_of(tick)
            for decision in trader.on_signal(signal, atr=tick.atr):
                self._decided(decision, signal)
        request = self.closes.pop(tick.symbol, None)
        if request is not None:
            signal = close_signal_of(request, tick)
            for decision in trader.on_signal(signal, atr=tick.atr):
                self._decided(decision, signal)
                outcome = "ordered" if decision.outcome == "pending" else decision.reason
                self.answered.append(
                    replace(request, outcome=outcome, done_at_ms=tick.candle_closed_at_ms)
                )

    def _decided(self, decision: Decision, signal: SignalEmitted) -> None:
        decided_at_ms = signal.open_time_ms + TIMEFRAME_MS[signal.timeframe]
        ordered = decision.outcome == "pending"
        self.decisions.append(
            DecisionRow(
                signal_id=decision.signal_id,
                exchange=signal.exchange,
                symbol=signal.symbol,
                side=decision.side,
                outcome="ordered" if ordered else "skipped",
                reason="" if ordered else (decision.reason or ""),
                client_order_id=decision.client_order_id,
                decided_at_ms=decided_at_ms,
            )
        )
        if ordered:
            assert decision.client_order_id is not None
            order = OrderPlaced(
                client_order_id=decision.client_order_id, signal_id=decision.signal_id,
                exchange=signal.exchange, symbol=signal.symbol, side=decision.side,
                quantity=decision.quantity, created_at_ms=decided_at_ms,
                candle_closed_at_ms=signal.candle_closed_at_ms,
            )  # fmt: skip
            self.orders[order.client_order_id] = (order, "pending")

    def _exit_ordered(self, order: PendingOrder, tick: Tick) -> None:
        placed = OrderPlaced(
            client_order_id=order.client_order_id, signal_id=order.signal_id,
            exchange=tick.exchange, symbol=order.symbol, side=order.side,
            quantity=order.quantity,
            created_at_ms=tick.open_time_ms + TIMEFRAME_MS[tick.timeframe],
            candle_closed_at_ms=tick.candle_closed_at_ms,
        )  # fmt: skip
        self.orders[placed.client_order_id] = (placed, "pending")

    def exchange_filled(self, client_order_id: str, fills: list[OrderFilled]) -> None:
        """Record the exchange's fills of an order (live) and the positions they move."""
        self._status(client_order_id, "filled" if fills else "cancelled")
        for filled in fills:
            self._position(filled)

    def cancelled(self, client_order_id: str) -> None:
        """Record that an order was never sent (live: a sell of dust)."""
        self._status(client_order_id, "cancelled")

    def rejected(self, client_order_id: str) -> None:
        """Record that the exchange refused an order (live)."""
        self._status(client_order_id, "rejected")

    def _filled(self, fill: Fill, tick: Tick) -> None:
        cid = fill.client_order_id
        if fill.signal_id is None:  # an exit no signal asked for: placed and filled at once
            order = OrderPlaced(
                client_order_id=cid, signal_id=f"{fill.kind}:{cid}", exchange=tick.exchange,
                symbol=fill.symbol, side=fill.side, quantity=fill.quantity,
                created_at_ms=fill.time_ms, candle_closed_at_ms=tick.candle_closed_at_ms,
            )  # fmt: skip
            self.orders[cid] = (order, "filled")
        else:  # a market order a signal placed, in this batch or an earlier one
            self._status(cid, "filled")
        filled = OrderFilled(
            fill_id=f"{cid}-{fill.kind}-{fill.time_ms}", client_order_id=cid,
            exchange=tick.exchange, symbol=fill.symbol, side=fill.side, price=fill.price,
            quantity=fill.quantity, fee=fill.fee, filled_at_ms=fill.time_ms,
        )  # fmt: skip
        self._position(filled)

    def _position(self, filled: OrderFilled) -> None:
        self.fills.append(filled)
        position = apply_fill(self.positions.get(filled.symbol), filled)
        self.positions[filled.symbol] = self.changed[filled.symbol] = position

    def _status(self, cid: str, status: str) -> None:
        order = self.orders.get(cid)
        if order is not None:
            self.orders[cid] = (order[0], status)
        else:  # placed in an earlier batch: only its status changes
            self.statuses[cid] = status

    @property
    def placed(self) -> list[OrderPlaced]:
        """The orders new in this batch, to publish."""
        return [order for order, _ in self.orders.values()]
