"""Backtests on the live code paths: candle arrays in, fills, round trips and a report out.

Per market, `FrameSignals` computes the indicators with the batch kernels (missing candles
filled as the live indicators service fills them) and the signals with the strategy's batch
path, and builds a signal's `SignalEmitted` the live way when the trader needs it. One `Trader`
(the executor's state machine) takes every market's candles in global time order: for each
candle first `on_candle` (a pending order fills at its open, then the holding's exits run on its
high and low), then `on_signal` if the candle made a signal, so a signal on candle t fills at
candle t+1's open. Only what can change something costs a Python call (see `replay`).

The round trips and the equity curve are computed from the fills afterwards (see `round_trips`), the
figures by `report`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from services.executor.candles import CandleArrays
from services.executor.exits import ExitRules
from services.executor.frame_signals import FrameSignals
from services.executor.orders import Decision, Fill
from services.executor.replay import CANDLE_SOURCE, Progress, ReplayMarket, Reporter, replay
from services.executor.report import Report, compute_report
from services.executor.risk import RiskLimits
from services.executor.round_trips import MarketPrices, Trade, equity_curve, round_trips
from services.executor.sizing import Sizing
from services.executor.trader import Trader
from services.indicators.engine import IndicatorParams
from services.signals.strategy import BandsParams

F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ExitSwitches:
    """Which exit kinds may happen; each one off removes it whatever the rules say."""

    stop_loss: bool = True
    take_profit: bool = True
    trailing_stop: bool = True
    breakeven: bool = True
    time_stop: bool = True
    signal: bool = True  # a sell signal closing the holding at the next open

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"exit switch {name} must be true or false")

    def apply(self, rules: ExitRules) -> ExitRules:
        """Return `rules` with every switched-off exit removed."""
        changes: dict[str, object] = {}
        if not self.stop_loss:
            changes |= {"stop_loss_pct": None, "stop_loss_atr": None}
        if not self.take_profit:
            changes["take_profits"] = ()
        if not self.trailing_stop:
            changes |= {"trailing_pct": None, "trailing_atr": None}
        if not self.breakeven:
            changes["breakeven_after_first_tp"] = False
        if not self.time_stop:
            changes["time_stop_candles"] = None
        return replace(rules, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """Everything a backtest depends on besides the candles. Money in quote currency."""

    indicators: IndicatorParams = field(default_factory=IndicatorParams)
    strategy: BandsParams = field(default_factory=BandsParams)
    exits: ExitRules = field(default_factory=ExitRules)
    switches: ExitSwitches = field(default_factory=ExitSwitches)
    sizing: Sizing = field(default_factory=Sizing)
    limits: RiskLimits = field(default_factory=RiskLimits)
    slippage_bps: float = 5.0
    fee_bps: float = 10.0
    equity: float = 10_000.0
    fill_gaps: bool = True

    @property
    def rules(self) -> ExitRules:
        """Return the exit rules in force: `exits` less the switched-off kinds."""
        return self.switches.apply(self.exits)

    def trader(self) -> Trader:
        """Return a fresh account with this configuration."""
        return Trader(
            self.rules, self.sizing, self.limits, slippage_bps=self.slippage_bps,
            fee_bps=self.fee_bps, equity=self.equity, exchange=CANDLE_SOURCE,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """A backtest's outcome.

    `trades`: the closed round trips (see `round_trips`); `open_trades`: those still held at the end
    (marked at the last close in the equity curve). `fills`: every execution, in order.
    `decisions`: the trader's decision on each signal it was handed (`fast` hands only the
    signals it may act on; `signals` counts them all). The curve has one point per candle open
    time of any market: `equity` at that candle's close, `in_position` when a holding was open
    during (part of) it.
    """

    trades: tuple[Trade, ...]
    open_trades: tuple[Trade, ...]
    fills: tuple[Fill, ...]
    decisions: tuple[Decision, ...]
    times_ms: I64Array
    equity: F64Array
    in_position: BoolArray
    report: Report
    signals: int
    cash: float  # the account's at the end
    realized_pnl: float  # the account's at the end, fees included


def _next_rows(rows: I64Array, size: int) -> I64Array:
    """Return, for each of `size` + 1 rows, the first of the ascending `rows` at or after it."""
    found: I64Array = np.append(rows, size)[np.searchsorted(rows, np.arange(size + 1))]
    return found


def _prepare(
    index: int, symbol: str, candles: CandleArrays, config: BacktestConfig
) -> ReplayMarket:
    """Return a market ready for the replay: its candles and its signals."""
    signals = FrameSignals(
        symbol, candles, config.indicators, config.strategy, fill_gaps=config.fill_gaps,
        sells=config.switches.signal,  # a sell signal only closes a holding
    )  # fmt: skip
    size = candles.times_ms.size
    return ReplayMarket(
        index=index, symbol=symbol, exchange=candles.exchange, timeframe=candles.timeframe,
        timeframe_ms=candles.timeframe_ms, times=candles.times_ms, open=candles.open,
        high=candles.high, low=candles.low, close=candles.close, atr=signals.atr,
        signal_side=signals.side, signal_at=signals.message,
        next_signal=_next_rows(signals.rows, size), next_sell=_next_rows(signals.sell_rows, size),
    )  # fmt: skip


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, as it was before afterwards.

    A run allocates many short-lived acyclic objects (messages, candles, fills) that reference
    counting frees; the collector's passes over everything alive cost up to a third of a run.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_backtest(
    markets: Mapping[str, CandleArrays],
    config: BacktestConfig,
    *,
    progress: Progress | None = None,
    fast: bool = True,
) -> BacktestResult:
    """Backtest the strategy on `markets` (symbol -> candles) with one account.

    `progress(done, total)` is called now and then with the candles replayed so far.
    `fast=False` hands every candle of an active market and every signal to the trader one by
    one (see `replay`): slower, the same fills.
    """
    if not markets:
        raise ValueError("no markets to backtest")
    trader = config.trader()
    with _collector_paused():
        prepared = [
            _prepare(index, symbol, candles, config)
            for index, (symbol, candles) in enumerate(markets.items())
        ]
        fills, decisions = replay(trader, prepared, Reporter(prepared, progress), fast=fast)
        trades = round_trips(fills, frozenset(trader.holdings))
    prices = [
        MarketPrices(symbol, candles.times_ms, candles.close, candles.timeframe_ms)
        for symbol, candles in markets.items()
    ]
    times, equity, in_position = equity_curve(prices, trades, config.equity)
    closed = tuple(trade for trade in trades if trade.closed)
    report = compute_report(
        equity=equity,
        in_position=in_position,
        trade_results=[trade.pnl for trade in closed],
        initial_equity=config.equity,
        timeframe_ms=min(candles.timeframe_ms for candles in markets.values()),
    )
    return BacktestResult(
        trades=closed,
        open_trades=tuple(trade for trade in trades if not trade.closed),
        fills=tuple(fills),
        decisions=tuple(decisions),
        times_ms=times,
        equity=equity,
        in_position=in_position,
        report=report,
        signals=sum(len(market.signal_side) for market in prepared),
        cash=trader.cash,
        realized_pnl=trader.realized_pnl,
    )
