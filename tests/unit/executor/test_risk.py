"""Pre-trade risk checks: each limit blocks an entry with its own reason."""

from __future__ import annotations

import pytest

from services.executor.risk import BookView, RiskLimits, entry_blocked

NOW = 1_702_080_000_000


def blocked(limits: RiskLimits, book: BookView | None = None, **kwargs: object) -> str | None:
    arguments: dict[str, object] = {
        "symbol": "A/B",
        "notional": 100.0,
        "now_ms": NOW,
        "last_candle_ms": NOW,
    }
    arguments.update(kwargs)
    return entry_blocked(limits, book or BookView(), **arguments)  # type: ignore[arg-type]


def test_nothing_blocks_an_entry_within_every_limit() -> None:
    limits = RiskLimits(
        max_open_positions=2,
        max_notional_per_symbol=150.0,
        max_notional_total=300.0,
        cooldown_ms=60_000,
        max_daily_loss=10.0,
        stale_after_ms=120_000,
    )
    book = BookView({"C/D": 100.0}, {"A/B": NOW - 60_000}, -9.0)
    assert blocked(limits, book) is None


def test_the_kill_switch_blocks_every_entry() -> None:
    assert blocked(RiskLimits(kill_switch=True)) == "kill_switch"


def test_a_paused_symbol_takes_no_entry_and_the_others_do() -> None:
    assert blocked(RiskLimits(paused=frozenset({"A/B"}))) == "paused"
    assert blocked(RiskLimits(paused=frozenset({"C/D"}))) is None


def test_max_open_positions_counts_every_symbol_held_or_pending() -> None:
    book = BookView({"C/D": 1.0, "E/F": 1.0})
    assert blocked(RiskLimits(max_open_positions=2), book) == "max_open_positions"
    assert blocked(RiskLimits(max_open_positions=3), book) is None


def test_notional_limits_per_symbol_and_in_total() -> None:
    assert blocked(RiskLimits(max_notional_per_symbol=99.0)) == "max_notional_symbol"
    book = BookView({"C/D": 150.0})
    assert blocked(RiskLimits(max_notional_total=249.0), book) == "max_notional_total"
    assert blocked(RiskLimits(max_notional_total=250.0), book) is None


def test_cooldown_counts_from_the_close_of_the_last_position_in_that_symbol() -> None:
    book = BookView(last_closed_ms={"A/B": NOW - 30_000})
    limits = RiskLimits(cooldown_ms=60_000)
    assert blocked(limits, book) == "cooldown"
    assert blocked(limits, book, now_ms=NOW + 30_000, last_candle_ms=NOW + 30_000) is None
    assert blocked(limits, book, symbol="C/D") is None


def test_the_daily_loss_limit_blocks_once_the_days_realised_loss_reaches_it() -> None:
    limits = RiskLimits(max_daily_loss=10.0)
    assert blocked(limits, BookView(realized_pnl_today=-10.0)) == "daily_loss"
    assert blocked(limits, BookView(realized_pnl_today=-9.99)) is None


def test_stale_data_blocks_a_symbol_without_a_recent_candle() -> None:
    limits = RiskLimits(stale_after_ms=120_000)
    assert blocked(limits, last_candle_ms=NOW - 120_001) == "stale_data"
    assert blocked(limits, last_candle_ms=None) == "stale_data"
    assert blocked(limits, last_candle_ms=NOW - 120_000) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"max_open_positions": 0},
        {"max_open_positions": 1.5},
        {"cooldown_ms": -1},
        {"max_daily_loss": 0.0},
        {"max_notional_total": float("inf")},
        {"stale_after_ms": -5},
    ],
)
def test_invalid_limits_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RiskLimits(**fields)  # type: ignore[arg-type]
