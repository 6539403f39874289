"""Backtest figures on small hand-computed cases."""

from __future__ import annotations

import math

import pytest

from services.executor.report import compute_report, drawdown_curve, max_drawdown, sharpe_ratio

DAY_MS = 86_400_000


def test_report_of_a_small_case_equals_the_hand_computed_figures() -> None:
    # returns +10%, -10%, +10%: mean 1/30, standard deviation (ddof 1) 1/sqrt(75)
    report = compute_report(
        equity=[110.0, 99.0, 108.9],
        in_position=[True, False, True],
        trade_results=[5.0, -2.0, 3.0, -1.0],
        initial_equity=100.0,
        timeframe_ms=DAY_MS,
    )

    assert report.total_return == pytest.approx(0.089)
    assert report.final_equity == pytest.approx(108.9)
    assert report.trades == 4
    assert report.win_rate == 0.5
    assert report.profit_factor == pytest.approx(8.0 / 3.0)
    assert report.max_drawdown == pytest.approx(0.1)
    assert report.sharpe == pytest.approx(math.sqrt(365 / 12))
    assert report.exposure == pytest.approx(2 / 3)
    assert report.candles == 3


def test_sharpe_is_annualised_by_the_candle_length() -> None:
    daily = sharpe_ratio([110.0, 99.0, 108.9], 100.0, DAY_MS)
    minutely = sharpe_ratio([110.0, 99.0, 108.9], 100.0, 60_000)

    assert daily is not None and minutely is not None
    assert minutely / daily == pytest.approx(math.sqrt(1440))


def test_drawdown_is_measured_from_the_running_peak_including_the_initial_equity() -> None:
    # peak 100 (initial) -> 90 is 10% down; new peak 120 -> 84 is 30% down
    assert max_drawdown([90.0, 120.0, 84.0, 130.0], 100.0) == pytest.approx(0.3)
    assert drawdown_curve([90.0, 120.0, 84.0, 130.0], 100.0) == pytest.approx([0.1, 0.0, 0.3, 0.0])


def test_figures_without_trades_or_variation_are_undefined_not_zero() -> None:
    report = compute_report(
        equity=[100.0, 100.0, 100.0],
        in_position=[False, False, False],
        trade_results=[],
        initial_equity=100.0,
        timeframe_ms=60_000,
    )

    assert report.trades == 0
    assert report.win_rate is None
    assert report.profit_factor is None
    assert report.sharpe is None
    assert report.total_return == 0.0
    assert report.max_drawdown == 0.0
    assert report.exposure == 0.0


def test_profit_factor_is_undefined_with_only_winning_trades() -> None:
    report = compute_report(
        equity=[101.0, 103.0],
        in_position=[True, True],
        trade_results=[1.0, 2.0],
        initial_equity=100.0,
        timeframe_ms=60_000,
    )

    assert report.win_rate == 1.0
    assert report.profit_factor is None


def test_equity_and_exposure_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per candle"):
        compute_report(
            equity=[100.0, 101.0],
            in_position=[True],
            trade_results=[],
            initial_equity=100.0,
            timeframe_ms=60_000,
        )
