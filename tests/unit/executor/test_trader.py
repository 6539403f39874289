"""The trader: signals become market orders at the next open, exits follow the rules, limits
block entries but never exits, and a restored trader continues exactly where it stopped."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from services.executor.exits import ExitRules
from services.executor.risk import RiskLimits
from services.executor.sizing import Sizing
from services.executor.trader import Decision, Fill, Trader
from services.indicators.engine import IndicatorParams, compute_frame
from services.signals.strategy import StochRsiBands
from shared.messages import CandleClosed, OrderFilled, SignalEmitted, client_order_id, signal_id
from tests.conftest import ohlcv_path
from tests.fakes import load_candles

MIDNIGHT = 1_702_080_000_000  # a UTC midnight
MINUTE = 60_000


def candle(
    minute: int, o: float, h: float, low: float, c: float, symbol: str = "A/B"
) -> CandleClosed:
    return CandleClosed(
        exchange="x", symbol=symbol, timeframe="1m", open_time_ms=MIDNIGHT + minute * MINUTE,
        open=o, high=h, low=low, close=c, volume=1.0, source="replay",
        closed_at_ms=MIDNIGHT + (minute + 1) * MINUTE,
    )  # fmt: skip


def flat(minute: int, price: float = 100.0, symbol: str = "A/B") -> CandleClosed:
    """A candle that touches no stop or target of a holding bought near `price`."""
    return candle(minute, price, price * 1.001, price * 0.999, price, symbol)


def signal(minute: int, side: str, price: float = 100.0, symbol: str = "A/B") -> SignalEmitted:
    open_time_ms = MIDNIGHT + minute * MINUTE
    return SignalEmitted(
        signal_id=signal_id("s", "x", symbol, "1m", open_time_ms), strategy="s", exchange="x",
        symbol=symbol, timeframe="1m", open_time_ms=open_time_ms, side=side,  # type: ignore[arg-type]
        price=price, reason="", candle_closed_at_ms=open_time_ms + MINUTE,
    )  # fmt: skip


def new_trader(
    rules: ExitRules | None = None,
    limits: RiskLimits | None = None,
    *,
    slippage_bps: float = 0.0,
    fee_bps: float = 0.0,
    equity: float = 1000.0,
    sizing: Sizing | None = None,
) -> Trader:
    return Trader(
        rules or ExitRules(), sizing or Sizing(quote_amount=100.0), limits or RiskLimits(),
        slippage_bps=slippage_bps, fee_bps=fee_bps, equity=equity,
    )  # fmt: skip


def bought(trader: Trader, symbol: str = "A/B", minute: int = 0) -> Fill:
    """Signal a buy at 100 on `minute` and fill it at the next candle's open of 100."""
    trader.on_signal(signal(minute, "buy", symbol=symbol), atr=1.0)
    (fill,) = trader.on_candle(flat(minute + 1, symbol=symbol))
    return fill


def test_a_buy_signal_fills_at_the_next_candles_open_with_slippage_and_fee() -> None:
    trader = new_trader(slippage_bps=10.0, fee_bps=10.0)
    assert trader.on_candle(candle(0, 99.0, 100.5, 98.5, 100.0)) == []
    (decision,) = trader.on_signal(signal(0, "buy", 100.0), atr=1.0)
    order_id = client_order_id(signal(0, "buy").signal_id)
    assert decision == Decision(
        signal(0, "buy").signal_id, "A/B", "buy", "pending", None, order_id, 1.0
    )
    assert trader.on_candle(candle(0, 99.0, 100.5, 98.5, 100.0)) == []  # never at t's close
    (fill,) = trader.on_candle(candle(1, 101.0, 101.2, 100.8, 101.1))
    assert fill.kind == "entry" and fill.side == "buy" and fill.time_ms == MIDNIGHT + MINUTE
    assert fill.price == pytest.approx(101.101) and fill.quantity == 1.0
    assert fill.fee == pytest.approx(0.101101)
    assert fill.client_order_id == order_id and fill.signal_id == signal(0, "buy").signal_id
    assert trader.cash == pytest.approx(1000.0 - 101.101 - 0.101101)
    assert trader.realized_pnl == pytest.approx(-0.101101)
    assert trader.equity == pytest.approx(trader.cash + 101.1)
    holding = trader.holdings["A/B"]
    assert holding.entry_price == fill.price and holding.stop == pytest.approx(101.101 * 0.98)
    assert holding.candles_held == 1  # the entry candle was stepped
    assert not trader.pending


def test_a_signal_decided_before_its_own_candle_is_applied_still_waits_for_the_next() -> None:
    trader = new_trader()
    trader.on_signal(signal(0, "buy", 100.0), atr=1.0)
    assert trader.on_candle(candle(0, 99.0, 100.5, 98.5, 100.0)) == []
    assert [f.kind for f in trader.on_candle(flat(1, 100.2))] == ["entry"]


def test_stops_pay_slippage_and_targets_fill_at_their_level() -> None:
    trader = new_trader(slippage_bps=10.0, fee_bps=10.0)
    entry = bought(trader)  # 100 x 1.001 = 100.1 for 1.0
    (target,) = trader.on_candle(candle(2, 100.5, 101.7, 100.4, 101.5))
    assert target.kind == "take_profit" and target.signal_id is None
    assert target.price == pytest.approx(100.1 * 1.015) and target.quantity == 0.5
    assert target.fee == pytest.approx(target.price * 0.5 * 0.001)
    (stop,) = trader.on_candle(candle(3, 101.0, 101.1, 100.0, 100.2))
    assert stop.kind == "breakeven_stop" and stop.quantity == 0.5
    assert stop.price == pytest.approx(100.1 * 0.999)
    assert "A/B" not in trader.holdings
    fees = entry.fee + target.fee + stop.fee
    expected = (target.price - 100.1) * 0.5 + (stop.price - 100.1) * 0.5 - fees
    assert trader.realized_pnl == pytest.approx(expected)
    assert trader.cash == pytest.approx(1000.0 + expected) and trader.equity == trader.cash


def test_a_sell_signal_exits_the_remainder_at_the_next_open_with_slippage() -> None:
    trader = new_trader(slippage_bps=10.0)
    bought(trader)
    (decision,) = trader.on_signal(signal(1, "sell", 100.5), atr=1.0)
    assert decision.outcome == "pending" and decision.quantity == pytest.approx(1.0)
    (fill,) = trader.on_candle(candle(2, 100.8, 100.9, 100.7, 100.8))
    assert fill.kind == "signal" and fill.side == "sell" and fill.quantity == pytest.approx(1.0)
    assert fill.price == pytest.approx(100.8 * 0.999)
    assert fill.signal_id == signal(1, "sell").signal_id
    assert fill.client_order_id == client_order_id(signal(1, "sell").signal_id)
    assert not trader.holdings and not trader.pending


def test_signals_that_cannot_act_are_skipped_with_a_reason() -> None:
    trader = new_trader()

    def reason(minute: int, side: str) -> str | None:
        (decision,) = trader.on_signal(signal(minute, side), atr=1.0)
        return decision.reason

    assert reason(0, "sell") == "no_position"
    assert reason(0, "buy") is None
    assert reason(0, "buy") == "pending_order"
    trader.on_candle(flat(1))
    assert reason(1, "buy") == "already_long"
    assert reason(1, "sell") is None
    assert reason(1, "sell") == "pending_order"


def test_the_kill_switch_halts_entries_while_the_stop_of_an_open_position_still_fires() -> None:
    trader = new_trader()
    bought(trader)
    trader.limits = replace(trader.limits, kill_switch=True)
    (decision,) = trader.on_signal(signal(1, "buy", symbol="C/D"), atr=1.0)
    assert (decision.outcome, decision.reason) == ("skipped", "kill_switch")
    (stop,) = trader.on_candle(candle(2, 99.0, 99.2, 97.0, 97.5))
    assert stop.kind == "stop_loss" and stop.price == pytest.approx(98.0)
    (decision,) = trader.on_signal(signal(3, "buy"), atr=1.0)
    assert decision.reason == "kill_switch"


def test_position_and_notional_limits_block_entries_but_not_exits() -> None:
    trader = new_trader(limits=RiskLimits(max_open_positions=1))
    trader.on_signal(signal(0, "buy", symbol="A/B"), atr=1.0)  # pending counts as open
    assert trader.on_signal(signal(0, "buy", symbol="C/D"), atr=1.0)[0].reason == (
        "max_open_positions"
    )
    trader.on_candle(flat(1))
    assert trader.on_signal(signal(1, "sell"), atr=1.0)[0].outcome == "pending"

    trader = new_trader(limits=RiskLimits(max_notional_per_symbol=50.0))
    assert trader.on_signal(signal(0, "buy"), atr=1.0)[0].reason == "max_notional_symbol"

    trader = new_trader(limits=RiskLimits(max_notional_total=150.0))
    bought(trader)
    assert trader.on_signal(signal(1, "buy", symbol="C/D"), atr=1.0)[0].reason == (
        "max_notional_total"
    )
    assert trader.on_signal(signal(1, "sell"), atr=1.0)[0].outcome == "pending"


def test_cooldown_blocks_entries_in_a_symbol_for_a_while_after_its_position_closed() -> None:
    trader = new_trader(limits=RiskLimits(cooldown_ms=5 * MINUTE))
    bought(trader)
    (stop,) = trader.on_candle(candle(2, 99.0, 99.2, 97.0, 97.5))  # closed at minute 2
    assert stop.kind == "stop_loss"
    assert trader.on_signal(signal(5, "buy"), atr=1.0)[0].reason == "cooldown"  # decided at 6
    assert trader.on_signal(signal(5, "buy", symbol="C/D"), atr=1.0)[0].outcome == "pending"
    assert trader.on_signal(signal(6, "buy"), atr=1.0)[0].outcome == "pending"  # decided at 7


def test_the_daily_loss_limit_halts_entries_until_the_next_utc_day() -> None:
    trader = new_trader(limits=RiskLimits(max_daily_loss=1.5))
    bought(trader, minute=-6)  # 23:54, filled at 23:55
    (stop,) = trader.on_candle(candle(-4, 99.0, 99.2, 97.0, 97.5))  # loses 2.0 at 23:56
    assert stop.kind == "stop_loss" and trader.realized_pnl == pytest.approx(-2.0)
    assert trader.on_signal(signal(-3, "buy", symbol="C/D"), atr=1.0)[0].reason == "daily_loss"
    assert trader.on_signal(signal(-2, "buy"), atr=1.0)[0].reason == "daily_loss"
    # The signal candle of 23:59 closes at midnight: the decision belongs to the new day.
    assert trader.on_signal(signal(-1, "buy", symbol="C/D"), atr=1.0)[0].outcome == "pending"


def test_stale_data_blocks_entries_in_that_symbol_only() -> None:
    trader = new_trader(limits=RiskLimits(stale_after_ms=2 * MINUTE))
    trader.on_candle(flat(9, symbol="A/B"))
    now = MIDNIGHT + 11 * MINUTE
    late = trader.on_signal(signal(5, "buy", symbol="C/D"), atr=1.0, now_ms=now)
    assert late[0].reason == "stale_data"  # C/D's newest candle closed at minute 6
    fresh = trader.on_signal(signal(9, "buy", symbol="A/B"), atr=1.0, now_ms=now)
    assert fresh[0].outcome == "pending"


def test_entries_are_cut_to_the_cash_not_promised_to_other_pending_entries() -> None:
    trader = new_trader(equity=150.0, fee_bps=10.0)
    first = trader.on_signal(signal(0, "buy", symbol="A/B"), atr=1.0)[0]
    second = trader.on_signal(signal(0, "buy", symbol="C/D"), atr=1.0)[0]
    third = trader.on_signal(signal(0, "buy", symbol="E/F"), atr=1.0)[0]
    assert first.quantity == 1.0
    assert second.quantity == pytest.approx((150.0 - 100.0 * 1.001) / (100.0 * 1.001))
    assert third.reason == "insufficient_cash"
    trader.on_candle(flat(1, symbol="A/B"))
    trader.on_candle(flat(1, symbol="C/D"))
    assert trader.cash == pytest.approx(0.0, abs=1e-9) and trader.cash >= 0.0


def test_a_candle_not_newer_than_the_last_one_of_its_symbol_is_ignored() -> None:
    trader = new_trader()
    bought(trader)
    drop = candle(1, 90.0, 90.0, 90.0, 90.0)  # a redelivery of minute 1 with other prices
    assert not trader.is_new("A/B", drop.open_time_ms)
    assert trader.is_new("A/B", drop.open_time_ms + MINUTE) and trader.is_new("C/D", 0)
    assert trader.on_candle(drop) == [] and "A/B" in trader.holdings
    assert trader.holdings["A/B"].candles_held == 1


def test_configuration_errors_and_unknown_atr_are_reported() -> None:
    with pytest.raises(ValueError, match="risk sizing needs a stop-loss"):
        new_trader(ExitRules(stop_loss_pct=None), sizing=Sizing(mode="risk"))
    trader = new_trader(ExitRules(stop_loss_atr=2.0))
    assert trader.on_signal(signal(0, "buy"), atr=math.nan)[0].reason == "no_atr"
    risk = new_trader(ExitRules(stop_loss_atr=2.0), sizing=Sizing(mode="risk", risk_pct=1.0))
    (decision,) = risk.on_signal(signal(0, "buy"), atr=0.5)
    assert decision.quantity == pytest.approx(10.0)  # 1 % of 1000 over a 1.0 stop distance


def test_a_snapshot_with_a_pending_order_restores_into_the_same_fills() -> None:
    trader = new_trader(slippage_bps=5.0, fee_bps=10.0)
    trader.on_signal(signal(0, "buy"), atr=1.0)
    restored = Trader.restore(
        json.loads(json.dumps(trader.snapshot())), ExitRules(), Sizing(quote_amount=100.0),
        RiskLimits(), slippage_bps=5.0, fee_bps=10.0,
    )  # fmt: skip
    assert restored.on_candle(flat(1)) == trader.on_candle(flat(1))
    assert restored.snapshot() == trader.snapshot()


@functools.cache
def real_market() -> tuple[list[CandleClosed], dict[int, SignalEmitted], np.ndarray]:
    """ETH/BTC 1m candles, the strategy's signals by row, and each row's ATR."""
    rows = json.loads(ohlcv_path("ETH_BTC-1m.json").read_text())
    table = np.array(rows, dtype=float)
    frame = compute_frame(
        table[:, 0].astype(np.int64), table[:, 2], table[:, 3], table[:, 4],
        timeframe_ms=MINUTE, params=IndicatorParams(),
    )  # fmt: skip
    candles = load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", len(rows))
    signals: dict[int, SignalEmitted] = {}
    for row, side in enumerate(StochRsiBands().signals(frame)):
        if side:
            open_time_ms = candles[row].open_time_ms
            signals[row] = SignalEmitted(
                signal_id=signal_id("stochrsi_bands", "binance", "ETH/BTC", "1m", open_time_ms),
                strategy="stochrsi_bands", exchange="binance", symbol="ETH/BTC", timeframe="1m",
                open_time_ms=open_time_ms, side="buy" if side == 1 else "sell",
                price=candles[row].close, reason="", candle_closed_at_ms=open_time_ms + MINUTE,
            )  # fmt: skip
    return candles, signals, frame["atr"]


RULES = ExitRules(
    stop_loss_atr=3.0, take_profits=((2.0, 0.5), (4.0, 0.3)), take_profit_in_atr=True,
    trailing_atr=4.0, time_stop_candles=120,
)  # fmt: skip
SIZING = Sizing(mode="equity_pct", equity_pct=50.0)
LIMITS = RiskLimits(cooldown_ms=5 * MINUTE, max_daily_loss=0.03)
SLIPPAGE_BPS, FEE_BPS = 5.0, 10.0


def real_trader() -> Trader:
    return Trader(RULES, SIZING, LIMITS, slippage_bps=SLIPPAGE_BPS, fee_bps=FEE_BPS, equity=1.0)


def restored(trader: Trader) -> Trader:
    """Return a trader restored from `trader`'s snapshot after a trip through JSON text."""
    snapshot = json.loads(json.dumps(trader.snapshot()))
    twin = Trader.restore(
        snapshot, RULES, SIZING, LIMITS, slippage_bps=SLIPPAGE_BPS, fee_bps=FEE_BPS
    )
    assert twin.snapshot() == snapshot  # restore reads back everything snapshot wrote
    assert twin.equity == trader.equity
    return twin


class Replay:
    """Feeds real candles and signals to a trader, collecting its fills and decisions."""

    def __init__(self) -> None:
        self.candles, self.signals, self.atr = real_market()
        self.fills: list[Fill] = []
        self.reasons: list[str | None] = []

    def drive(self, trader: Trader, row: int) -> None:
        self.fills += trader.on_candle(self.candles[row], atr=float(self.atr[row]))
        if row in self.signals:
            decisions = trader.on_signal(self.signals[row], atr=float(self.atr[row]))
            self.reasons += [decision.reason for decision in decisions]


def uninterrupted() -> tuple[Replay, Trader]:
    replay, trader = Replay(), real_trader()
    for row in range(len(replay.candles)):
        replay.drive(trader, row)
    return replay, trader


def test_a_trader_restored_mid_position_fills_exactly_like_an_uninterrupted_one() -> None:
    expected, whole = uninterrupted()
    replay, trader = Replay(), real_trader()
    half, split = len(replay.candles) // 2, None
    for row in range(len(replay.candles)):
        replay.drive(trader, row)
        holdings = trader.holdings.values()
        if split is None and row >= half and any(h.breakeven_done for h in holdings):
            split, trader = row, restored(trader)  # mid-position, after a partial exit
    assert split is not None

    assert replay.fills == expected.fills and replay.reasons == expected.reasons
    assert trader.snapshot() == whole.snapshot()
    kinds = {fill.kind for fill in expected.fills}
    assert kinds >= {"entry", "signal", "take_profit", "stop_loss", "trailing_stop", "time_stop"}
    assert {"daily_loss", "cooldown", "already_long", None} <= set(expected.reasons)
    opens = {c.open_time_ms: c.open for c in replay.candles}
    for fill in expected.fills:
        if fill.kind == "entry":  # the open after the signal's candle, plus 5 bps
            assert fill.price == pytest.approx(opens[fill.time_ms] * 1.0005)


def test_restoring_every_hundred_candles_changes_no_fill_and_no_decision() -> None:
    expected, whole = uninterrupted()
    replay, trader = Replay(), real_trader()
    for row in range(len(replay.candles)):
        replay.drive(trader, row)
        if row % 101 == 0:
            trader = restored(trader)
    assert replay.fills == expected.fills and replay.reasons == expected.reasons
    assert trader.snapshot() == whole.snapshot()


# --- live: the exchange fills the orders ---------------------------------------------------------


def live_trader(rules: ExitRules | None = None) -> Trader:
    return Trader(
        rules or ExitRules(), Sizing(quote_amount=100.0), RiskLimits(),
        slippage_bps=0.0, fee_bps=0.0, equity=1000.0, live=True,
    )  # fmt: skip


def exchange_fill(
    order_id: str, side: str, price: float, quantity: float, fee: float, minute: int
) -> OrderFilled:
    return OrderFilled(
        fill_id=f"{order_id}-{price}", client_order_id=order_id, exchange="x", symbol="A/B",
        side=side, price=price, quantity=quantity, fee=fee,  # type: ignore[arg-type]
        filled_at_ms=MIDNIGHT + minute * MINUTE,
    )  # fmt: skip


def live_bought(trader: Trader) -> str:
    """A buy signal on minute 0, filled by the exchange in two trades averaging 100."""
    (decision,) = trader.on_signal(signal(0, "buy"), atr=1.0)
    assert decision.client_order_id is not None
    cid = decision.client_order_id
    trader.fill_external(
        cid,
        [
            exchange_fill(cid, "buy", 99.0, 0.5, 0.05, 1),
            exchange_fill(cid, "buy", 101.0, 0.5, 0.05, 1),
        ],
    )
    return cid


def test_live_candles_fill_nothing_and_the_exchanges_fills_open_the_holding() -> None:
    trader = live_trader()
    (decision,) = trader.on_signal(signal(0, "buy"), atr=1.0)
    assert trader.on_candle(flat(1)) == [] and "A/B" in trader.pending  # the exchange's job
    cid = decision.client_order_id
    assert cid is not None
    fills = trader.fill_external(
        cid,
        [
            exchange_fill(cid, "buy", 99.0, 0.5, 0.05, 1),
            exchange_fill(cid, "buy", 101.0, 0.5, 0.05, 1),
        ],
    )
    assert [(f.kind, f.price, f.signal_id) for f in fills] == [
        ("entry", 99.0, signal(0, "buy").signal_id),
        ("entry", 101.0, signal(0, "buy").signal_id),
    ]
    holding = trader.holdings["A/B"]
    assert holding.entry_price == pytest.approx(100.0) and holding.quantity == pytest.approx(1.0)
    assert holding.entry_time_ms == MIDNIGHT + MINUTE  # the signal candle's close
    assert holding.stop == pytest.approx(98.0)
    assert trader.cash == pytest.approx(1000.0 - 100.0 - 0.1)
    assert trader.realized_pnl == pytest.approx(-0.1) and not trader.pending


def test_live_exit_hits_become_one_sell_and_the_holding_changes_when_it_fills() -> None:
    trader = live_trader()
    live_bought(trader)
    # minute 2 reaches the first target (101.5) and the stop (98) in one candle: one sell
    assert trader.on_candle(candle(2, 100.0, 101.6, 97.0, 98.5)) == []
    order = trader.pending["A/B"]
    assert (order.side, order.kind, order.quantity) == ("sell", "stop_loss", pytest.approx(1.0))
    assert order.after is None and trader.holdings["A/B"].quantity == pytest.approx(1.0)
    # while the sell is out, candles mark the holding but step no exit again
    assert trader.on_candle(candle(3, 98.0, 98.1, 90.0, 95.0)) == []
    assert trader.pending["A/B"] is order
    (fill,) = trader.fill_external(
        order.client_order_id, [exchange_fill(order.client_order_id, "sell", 97.5, 1.0, 0.1, 3)]
    )
    assert fill.kind == "stop_loss" and fill.signal_id is None
    assert not trader.holdings and not trader.pending
    assert trader.realized_pnl == pytest.approx(-0.1 + (97.5 - 100.0) - 0.1)


def test_live_partial_take_profit_applies_the_rules_next_state_on_its_fill() -> None:
    trader = live_trader()
    live_bought(trader)
    trader.on_candle(candle(2, 100.5, 101.7, 100.4, 101.5))  # the first target, 101.5
    order = trader.pending["A/B"]
    assert order.kind == "take_profit" and order.quantity == pytest.approx(0.5)
    assert order.after is not None and order.after.breakeven_done
    trader.fill_external(
        order.client_order_id, [exchange_fill(order.client_order_id, "sell", 101.4, 0.5, 0.0, 2)]
    )
    holding = trader.holdings["A/B"]
    assert holding.quantity == pytest.approx(0.5) and holding.breakeven_done
    assert len(holding.targets) == 1  # the first target is gone
    assert trader.realized_pnl == pytest.approx(-0.1 + 1.4 * 0.5)


def test_a_refused_live_sell_leaves_the_holding_and_the_next_candle_tries_again() -> None:
    trader = live_trader()
    live_bought(trader)
    trader.on_candle(candle(2, 99.0, 99.1, 97.0, 97.5))  # the stop
    first = trader.reject(trader.pending["A/B"].client_order_id)
    assert first.kind == "stop_loss" and trader.holdings["A/B"].quantity == pytest.approx(1.0)
    trader.on_candle(candle(3, 97.5, 97.6, 96.0, 96.5))
    again = trader.pending["A/B"]
    assert again.kind == "stop_loss" and again.client_order_id != first.client_order_id
    with pytest.raises(KeyError, match="no pending order"):
        trader.reject(first.client_order_id)


def test_a_live_snapshot_restores_only_live_and_keeps_an_exit_order_out() -> None:
    trader = live_trader()
    live_bought(trader)
    trader.on_candle(candle(2, 100.5, 101.7, 100.4, 101.5))
    snapshot = json.loads(json.dumps(trader.snapshot()))
    twin = Trader.restore(
        snapshot, ExitRules(), Sizing(quote_amount=100.0), RiskLimits(),
        slippage_bps=0.0, fee_bps=0.0, live=True,
    )  # fmt: skip
    assert twin.snapshot() == trader.snapshot() and twin.pending == trader.pending
    with pytest.raises(ValueError, match="saved trading live; it cannot go on paper"):
        Trader.restore(
            snapshot, ExitRules(), Sizing(quote_amount=100.0), RiskLimits(),
            slippage_bps=0.0, fee_bps=0.0,
        )  # fmt: skip
    paper = json.loads(json.dumps(new_trader().snapshot()))
    with pytest.raises(ValueError, match="saved trading paper; it cannot go on live"):
        Trader.restore(
            paper, ExitRules(), Sizing(quote_amount=100.0), RiskLimits(),
            slippage_bps=0.0, fee_bps=0.0, live=True,
        )  # fmt: skip
