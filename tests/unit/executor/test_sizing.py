"""Position sizing: how much an entry buys in each mode, and what it refuses."""

from __future__ import annotations

import pytest

from services.executor.sizing import Sizing, quantity


def test_fixed_quote_spends_the_quote_amount() -> None:
    assert quantity(Sizing(quote_amount=50.0), price=4.0, equity=1000.0, stop_price=None) == 12.5


def test_equity_pct_spends_a_share_of_equity() -> None:
    sizing = Sizing(mode="equity_pct", equity_pct=25.0)
    assert quantity(sizing, price=5.0, equity=1000.0, stop_price=None) == 50.0


def test_risk_mode_loses_risk_pct_of_equity_when_the_stop_is_hit() -> None:
    sizing = Sizing(mode="risk", risk_pct=1.0)
    size = quantity(sizing, price=100.0, equity=10_000.0, stop_price=98.0)
    assert size == pytest.approx(50.0)  # 50 x (100 - 98) = 100 = 1 % of 10 000


def test_no_mode_buys_more_than_equity_can_pay() -> None:
    assert quantity(Sizing(quote_amount=500.0), price=10.0, equity=200.0, stop_price=None) == 20.0
    tight = Sizing(mode="risk", risk_pct=10.0)
    assert quantity(tight, price=100.0, equity=1000.0, stop_price=99.9) == 10.0
    assert quantity(Sizing(), price=10.0, equity=-5.0, stop_price=None) == 0.0


@pytest.mark.parametrize("stop", [None, 100.0, 101.0])
def test_risk_mode_without_a_stop_below_the_price_is_an_error(stop: float | None) -> None:
    with pytest.raises(ValueError, match="stop below the entry price"):
        quantity(Sizing(mode="risk"), price=100.0, equity=1000.0, stop_price=stop)


@pytest.mark.parametrize(
    "fields",
    [
        {"mode": "kelly"},
        {"quote_amount": 0.0},
        {"equity_pct": 0.0},
        {"equity_pct": 150.0},
        {"risk_pct": float("nan")},
    ],
)
def test_invalid_sizing_is_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Sizing(**fields)  # type: ignore[arg-type]


def test_a_price_that_is_not_positive_is_an_error() -> None:
    with pytest.raises(ValueError, match="price"):
        quantity(Sizing(), price=0.0, equity=1000.0, stop_price=None)
