"""Backtests of real candles through the live indicators, strategy and trader."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from services.executor.backtest import BacktestConfig, BacktestResult, ExitSwitches, run_backtest
from services.executor.candles import CandleArrays
from services.executor.exits import ExitRules
from services.executor.frame_signals import FrameSignals
from services.executor.sizing import Sizing
from services.indicators.engine import IndicatorEngine, IndicatorParams
from services.signals.strategy import BandsParams, KLine, StochRsiBands
from shared.messages import IndicatorsComputed, SignalEmitted
from tests.conftest import ohlcv_path
from tests.fakes import real_candles

SYMBOL = "ETH/BTC"
MINUTE_MS = 60_000
TIGHT = ExitRules(stop_loss_pct=0.5, take_profits=((0.3, 0.5), (1.0, 0.5)))
TRAILING = replace(TIGHT, stop_loss_pct=1.0, trailing_pct=0.3)
TIMED = replace(TIGHT, time_stop_candles=30)


def load(name: str = "ETH_BTC-1m.json") -> CandleArrays:
    rows = np.array(json.loads(ohlcv_path(name).read_text()), dtype=np.float64)
    timeframe = name.rsplit("-", 1)[1].removesuffix(".json")
    return CandleArrays(
        rows[:, 0].astype(np.int64), rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4], timeframe
    )


def kinds(result: BacktestResult) -> Counter[str]:
    return Counter(fill.kind for fill in result.fills)


def test_the_same_candles_and_config_give_the_same_backtest() -> None:
    candles = load()
    first = run_backtest({SYMBOL: candles}, BacktestConfig(exits=TIGHT))
    second = run_backtest({SYMBOL: candles}, BacktestConfig(exits=TIGHT))

    assert first.fills == second.fills
    assert first.report == second.report
    assert np.array_equal(first.equity, second.equity)
    assert first.report.trades > 100


def test_an_entry_fills_at_the_open_of_the_candle_after_its_signal() -> None:
    candles = load()
    config = BacktestConfig(exits=TIGHT, slippage_bps=5.0)
    result = run_backtest({SYMBOL: candles}, config)

    entries = [fill for fill in result.fills if fill.kind == "entry"]
    assert len(entries) > 100
    for fill in entries:
        assert fill.signal_id is not None
        signal_open_ms = int(fill.signal_id.rsplit(":", 1)[1])
        row = int(np.searchsorted(candles.times_ms, fill.time_ms))
        assert candles.times_ms[row] == fill.time_ms
        assert candles.times_ms[row - 1] == signal_open_ms  # the very next candle
        assert fill.price == pytest.approx(candles.open[row] * (1 + 5.0 / 10_000), rel=1e-12)


def test_no_signal_and_no_trade_during_the_indicator_warm_up() -> None:
    candles = load()
    params = IndicatorParams()
    result = run_backtest({SYMBOL: candles}, BacktestConfig(indicators=params, exits=TIGHT))

    warm_ms = candles.times_ms[params.warm_up_candles]
    first_signal_ms = min(int(d.signal_id.rsplit(":", 1)[1]) for d in result.decisions)
    assert first_signal_ms >= warm_ms
    assert min(fill.time_ms for fill in result.fills) > warm_ms


def live_signals(line: KLine) -> dict[str, SignalEmitted]:
    """Return the signals of the live path on ETH_BTC-1m: the indicators engine candle by
    candle, then the strategy on each message with the symbol's history."""
    strategy = StochRsiBands(BandsParams(line=line))
    signals = {}
    history: list[IndicatorsComputed] = []
    for message in IndicatorEngine(IndicatorParams()).update(real_candles(20_000)):
        signal = strategy.evaluate(message, history[-5:])
        if signal is not None:
            signals[signal.signal_id] = signal
        history.append(message)
    return signals


@pytest.mark.parametrize("line", ["stoch_k", "stochrsi_fastk"])
def test_each_signal_message_equals_the_live_services_one(line: KLine) -> None:
    live = live_signals(line)

    signals = FrameSignals(SYMBOL, load(), IndicatorParams(), BandsParams(line=line))

    built = [signals.message(row) for row in signals.rows.tolist()]
    assert len(built) == len(live) > 100
    assert all(signal == live[signal.signal_id] for signal in built)


def test_one_by_one_the_trader_decides_every_live_signal() -> None:
    live = live_signals("stoch_k")

    result = run_backtest({SYMBOL: load()}, BacktestConfig(), fast=False)

    assert {d.signal_id: d.side for d in result.decisions} == {
        signal_id: signal.side for signal_id, signal in live.items()
    }
    assert result.signals == len(live)


@pytest.mark.parametrize(
    ("rules", "switch", "kind"),
    [
        (TIGHT, "stop_loss", "stop_loss"),
        (TIGHT, "take_profit", "take_profit"),
        (TRAILING, "trailing_stop", "trailing_stop"),
        (TIGHT, "breakeven", "breakeven_stop"),
        (TIMED, "time_stop", "time_stop"),
        (TIGHT, "signal", "signal"),
    ],
)
def test_each_exit_switch_turns_its_exit_kind_off(rules: ExitRules, switch: str, kind: str) -> None:
    candles = load()
    on = run_backtest({SYMBOL: candles}, BacktestConfig(exits=rules))
    off = run_backtest(
        {SYMBOL: candles},
        BacktestConfig(exits=rules, switches=ExitSwitches(**{switch: False})),
    )

    assert kinds(on)[kind] > 10
    assert kinds(off)[kind] == 0
    assert kinds(off)["entry"] > 10


@pytest.mark.parametrize("rules", [ExitRules(), TIGHT, TRAILING, TIMED])
@pytest.mark.parametrize("files", [("ETH_BTC-1m.json",), ("ETH_BTC-1m.json", "XMR_BTC-1m.json")])
def test_the_fast_replay_gives_the_fills_of_the_one_by_one_replay(
    rules: ExitRules, files: tuple[str, ...]
) -> None:
    markets = {name.split("-")[0].replace("_", "/"): load(name) for name in files}
    # Sizing by equity: every entry depends on the other market's mark at that moment.
    config = BacktestConfig(exits=rules, sizing=Sizing(mode="equity_pct", equity_pct=40.0))

    fast = run_backtest(markets, config, fast=True)
    one_by_one = run_backtest(markets, config, fast=False)

    assert fast.fills == one_by_one.fills
    assert set(fast.decisions) <= set(one_by_one.decisions)
    skipped = set(one_by_one.decisions) - set(fast.decisions)
    assert {d.reason for d in skipped} == {"already_long", "no_position"}
    assert fast.report == one_by_one.report
    assert {fill.symbol for fill in fast.fills} == set(markets)


def test_several_markets_trade_in_global_time_order_with_one_account() -> None:
    markets = {SYMBOL: load(), "XMR/BTC": load("XMR_BTC-1m.json")}
    result = run_backtest(markets, BacktestConfig(exits=TIGHT))

    times = [fill.time_ms for fill in result.fills]
    assert times == sorted(times)
    assert result.times_ms.size == np.union1d(*(m.times_ms for m in markets.values())).size


def test_equity_and_trades_add_up_to_the_account() -> None:
    candles = load()
    result = run_backtest({SYMBOL: candles}, BacktestConfig(exits=TIGHT))

    every_trade = result.trades + result.open_trades
    assert sum(trade.pnl for trade in every_trade) == pytest.approx(result.realized_pnl, abs=1e-9)
    held = sum(t.quantity - sum(leg.quantity for leg in t.exits) for t in result.open_trades)
    assert result.equity[-1] == pytest.approx(result.cash + held * candles.close[-1], rel=1e-12)
    assert result.report.final_equity == result.equity[-1]
    assert result.report.trades == len(result.trades)
    assert all(trade.closed for trade in result.trades)
    assert 0 < result.report.exposure < 1


def test_exposure_counts_the_candles_from_each_entry_to_its_last_exit() -> None:
    candles = load()
    result = run_backtest({SYMBOL: candles}, BacktestConfig(exits=TIGHT))

    expected = np.zeros(candles.times_ms.size, dtype=bool)
    for trade in result.trades + result.open_trades:
        start = np.searchsorted(candles.times_ms, trade.entry_time_ms)
        end = (
            np.searchsorted(candles.times_ms, trade.exits[-1].time_ms) + 1
            if trade.closed
            else candles.times_ms.size
        )
        expected[start:end] = True
    assert np.array_equal(result.in_position, expected)


def test_progress_is_reported_in_order_up_to_every_candle() -> None:
    candles = load()
    calls: list[tuple[int, int]] = []

    run_backtest({SYMBOL: candles}, BacktestConfig(), progress=lambda *a: calls.append(a))

    done = [call[0] for call in calls]
    assert 10 <= len(calls) <= 102
    assert done == sorted(done)
    assert calls[-1] == (candles.times_ms.size, candles.times_ms.size)


def test_risk_sizing_without_a_stop_loss_is_refused() -> None:
    config = BacktestConfig(sizing=Sizing(mode="risk"), switches=ExitSwitches(stop_loss=False))
    with pytest.raises(ValueError, match="stop-loss"):
        run_backtest({SYMBOL: load()}, config)


def test_candles_out_of_order_or_with_a_bad_price_are_refused() -> None:
    times = np.array([0, MINUTE_MS, MINUTE_MS], dtype=np.int64)
    prices = np.ones(3)
    with pytest.raises(ValueError, match="strictly increasing"):
        CandleArrays(times, prices, prices, prices, prices)
    with pytest.raises(ValueError, match="finite and > 0"):
        bad = np.array([1.0, np.nan, 1.0])
        CandleArrays(np.arange(3, dtype=np.int64) * MINUTE_MS, prices, bad, prices, prices)
