"""Exit rules of one long holding, candle by candle, on hand-computed prices."""

from __future__ import annotations

import json
from dataclasses import replace

import msgspec
import pytest

from services.executor.exits import (
    ExitHit,
    ExitRules,
    Holding,
    effective_stop,
    open_holding,
    step,
)

MINUTE = 60_000
NO_TARGETS = ExitRules(take_profits=())


def entered(rules: ExitRules, *, quantity: float = 4.0, atr: float = 1.0) -> Holding:
    """A holding bought at 100.0 at minute 0."""
    return open_holding("A/B", 0, 100.0, quantity, atr, rules)


def run(
    holding: Holding, rules: ExitRules, candles: list[tuple[float, float, float, float]]
) -> tuple[Holding | None, list[ExitHit]]:
    """Step (open, high, low, close) candles from minute 0 on; stop stepping once closed."""
    hits: list[ExitHit] = []
    current: Holding | None = holding
    for minute, (o, h, low, c) in enumerate(candles):
        assert current is not None, "stepped a closed holding"
        current, new = step(current, minute * MINUTE, o, h, low, c, rules)
        hits += new
    return current, hits


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"take_profits": ((1.0, 0.0),)}, "fractions"),
        ({"take_profits": ((1.0, 1.5),)}, "fractions"),
        ({"take_profits": ((1.0, 0.6), (2.0, 0.6))}, "sum"),
        ({"take_profits": ((2.0, 0.5), (1.0, 0.5))}, "ascending"),
        ({"take_profits": ((1.0, 0.5), (1.0, 0.5))}, "ascending"),
        ({"take_profits": ((-1.0, 0.5),)}, "> 0"),
        ({"stop_loss_pct": 0.0}, "stop_loss_pct"),
        ({"stop_loss_pct": 100.0}, "stop_loss_pct"),
        ({"stop_loss_atr": -1.0}, "stop_loss_atr"),
        ({"trailing_pct": float("nan")}, "trailing_pct"),
        ({"trailing_atr": 0.0}, "trailing_atr"),
        ({"time_stop_candles": 0}, "time_stop_candles"),
        ({"time_stop_candles": True}, "time_stop_candles"),
    ],
)
def test_invalid_exit_rules_are_rejected_with_the_field_named(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ExitRules(**fields)  # type: ignore[arg-type]


def test_a_ladder_given_as_lists_becomes_tuples_and_may_sum_to_one() -> None:
    rules = ExitRules(take_profits=[[1, 0.3], [2, 0.3], [3, 0.4]])  # type: ignore[arg-type]
    assert rules.take_profits == ((1.0, 0.3), (2.0, 0.3), (3.0, 0.4))


def test_open_holding_places_the_stop_and_targets_in_percent_of_the_entry() -> None:
    holding = entered(ExitRules())
    assert holding.stop == pytest.approx(98.0)
    assert [price for price, _ in holding.targets] == pytest.approx([101.5, 103.0])
    assert [size for _, size in holding.targets] == [2.0, 2.0]
    assert holding.highest == 100.0 and holding.candles_held == 0 and not holding.breakeven_done


def test_open_holding_measures_in_atr_and_the_atr_stop_wins_over_the_percent_stop() -> None:
    rules = ExitRules(stop_loss_atr=1.5, take_profits=((2.0, 1.0),), take_profit_in_atr=True)
    holding = open_holding("A/B", 0, 100.0, 1.0, 0.5, rules)
    assert holding.stop == pytest.approx(99.25)  # not 98.0 from the default 2 %
    assert holding.targets == ((101.0, 1.0),)
    assert holding.entry_atr == 0.5


def test_the_last_target_of_a_full_ladder_takes_the_exact_remainder() -> None:
    rules = ExitRules(take_profits=((1.0, 0.1), (2.0, 0.2), (3.0, 0.7)))
    holding = open_holding("A/B", 0, 100.0, 0.3, 1.0, rules)
    after, hits = step(holding, 0, 100.0, 104.0, 99.0, 103.0, rules)
    assert after is None
    assert [hit.kind for hit in hits] == ["take_profit"] * 3
    assert sum(hit.quantity for hit in hits) == pytest.approx(0.3)


def test_open_holding_needs_a_known_atr_only_when_the_rules_measure_in_atr() -> None:
    with pytest.raises(ValueError, match="ATR"):
        open_holding("A/B", 0, 100.0, 1.0, float("nan"), ExitRules(stop_loss_atr=2.0))
    holding = open_holding("A/B", 0, 100.0, 1.0, float("nan"), ExitRules())
    assert holding.entry_atr == 0.0
    with pytest.raises(ValueError, match="entry price"):
        open_holding("A/B", 0, 0.0, 1.0, 1.0, ExitRules())
    with pytest.raises(ValueError, match="quantity"):
        open_holding("A/B", 0, 100.0, 0.0, 1.0, ExitRules())


def test_a_low_through_the_fixed_stop_exits_everything_at_the_stop() -> None:
    rules = ExitRules()
    after, hits = run(entered(rules), rules, [(100.0, 100.5, 99.0, 99.5), (99.5, 99.6, 97.5, 98.5)])
    assert after is None
    assert hits == [ExitHit("stop_loss", pytest.approx(98.0), 4.0, MINUTE)]  # type: ignore[arg-type]


def test_an_atr_stop_fires_where_the_percent_stop_would_not() -> None:
    rules = ExitRules(stop_loss_atr=1.5, take_profits=())
    holding = entered(rules, atr=1.0)  # stop 98.5; 2 % would be 98.0
    after, hits = run(holding, rules, [(100.0, 100.2, 98.6, 99.0)])
    assert after is not None and hits == []
    after, hits = run(after, rules, [(99.0, 99.1, 98.2, 98.9)])
    assert after is None and hits == [ExitHit("stop_loss", 98.5, 4.0, 0)]


def test_a_gap_through_the_stop_exits_at_the_open_not_at_the_stop() -> None:
    rules = ExitRules()
    after, hits = run(entered(rules), rules, [(100.0, 100.5, 99.0, 99.0), (97.0, 97.5, 96.0, 97.2)])
    assert after is None
    assert hits == [ExitHit("stop_loss", 97.0, 4.0, MINUTE)]


def test_a_gap_over_a_target_fills_it_at_the_open_and_the_candle_goes_on() -> None:
    rules = ExitRules()
    after, hits = run(
        entered(rules), rules, [(100.0, 100.5, 99.5, 100.0), (102.0, 102.5, 101.8, 102.2)]
    )
    assert hits == [ExitHit("take_profit", 102.0, 2.0, MINUTE)]
    assert after is not None and after.quantity == 2.0
    (target,) = after.targets
    assert target == pytest.approx((103.0, 2.0))
    after, hits = run(entered(rules), rules, [(104.0, 104.5, 103.5, 104.0)])
    assert after is None
    assert hits == [ExitHit("take_profit", 104.0, 2.0, 0), ExitHit("take_profit", 104.0, 2.0, 0)]


def test_the_ladder_exits_part_by_part_at_each_target_level() -> None:
    rules = ExitRules(breakeven_after_first_tp=False)
    after, hits = run(entered(rules), rules, [(100.0, 101.6, 99.5, 101.0)])
    assert hits == [ExitHit("take_profit", pytest.approx(101.5), 2.0, 0)]  # type: ignore[arg-type]
    assert after is not None and after.quantity == 2.0 and after.initial_quantity == 4.0
    assert after.stop == pytest.approx(98.0)  # breakeven off: the stop stays
    after, hits = run(after, rules, [(101.0, 102.9, 100.5, 102.0)])
    assert after is not None and hits == []
    after, hits = run(after, rules, [(102.0, 103.2, 101.9, 103.1)])
    assert after is None and hits == [ExitHit("take_profit", 103.0, 2.0, 0)]


def test_breakeven_after_the_first_target_applies_from_the_next_candle_on() -> None:
    rules = ExitRules()
    # Candle 1 hits target 1 and dips to 99.0, below the entry: still only the 98.0 stop holds.
    after, hits = run(entered(rules), rules, [(100.0, 101.6, 99.0, 100.5)])
    assert [hit.kind for hit in hits] == ["take_profit"]
    assert after is not None and after.breakeven_done and after.stop == 100.0
    assert effective_stop(after, rules) == (100.0, "breakeven_stop")
    # Candle 2 dips to 99.9: the breakeven stop at the entry price takes the remainder.
    after, hits = run(after, rules, [(100.5, 100.8, 99.9, 100.2)])
    assert after is None and hits == [ExitHit("breakeven_stop", 100.0, 2.0, 0)]


def test_the_trailing_stop_ratchets_up_and_never_acts_within_the_candle_that_set_it() -> None:
    rules = ExitRules(stop_loss_pct=5.0, take_profits=(), trailing_pct=2.0)
    holding = entered(rules)
    # Entry candle: high 110 then (or before) low 99. Trailing from 110 would be 107.8; the
    # stop in force is 100 x 0.98 = 98.0, so nothing fires inside this candle.
    after, hits = run(holding, rules, [(100.0, 110.0, 99.0, 109.0)])
    assert after is not None and hits == [] and after.highest == 110.0
    stop, kind = effective_stop(after, rules)
    assert stop == pytest.approx(107.8) and kind == "trailing_stop"
    # A lower high does not lower the stop; a new high of 112 raises it for the candle after.
    after, hits = run(after, rules, [(109.0, 109.5, 107.9, 109.0), (109.0, 112.0, 108.0, 111.0)])
    assert after is not None and hits == [] and after.highest == 112.0
    after, hits = run(after, rules, [(110.0, 110.5, 109.5, 110.0)])
    assert after is None and hits == [ExitHit("trailing_stop", pytest.approx(109.76), 4.0, 0)]  # type: ignore[arg-type]


def test_a_trailing_stop_in_atr_trails_the_highest_high_by_k_entry_atrs() -> None:
    rules = ExitRules(stop_loss_pct=None, take_profits=(), trailing_atr=2.0)
    after, hits = run(entered(rules, atr=1.5), rules, [(100.0, 105.0, 98.0, 104.0)])
    assert after is not None and hits == []  # 97.0 in force during the entry candle
    after, hits = run(after, rules, [(104.0, 104.5, 101.5, 102.0)])
    assert after is None and hits == [ExitHit("trailing_stop", 102.0, 4.0, 0)]


def test_the_time_stop_exits_the_remainder_at_the_close_of_the_nth_candle_held() -> None:
    rules = ExitRules(take_profits=(), time_stop_candles=3)
    quiet = (100.0, 100.5, 99.5, 100.1)
    after, hits = run(entered(rules), rules, [quiet, quiet])
    assert after is not None and after.candles_held == 2 and hits == []
    after, hits = step(after, 2 * MINUTE, 100.1, 100.4, 99.8, 100.3, rules)
    assert after is None and hits == [ExitHit("time_stop", 100.3, 4.0, 2 * MINUTE)]


def test_a_stop_and_a_target_in_one_candle_count_as_the_stop_first() -> None:
    rules = ExitRules()
    after, hits = run(
        entered(rules), rules, [(100.0, 100.2, 99.8, 100.0), (100.0, 102.0, 97.0, 101.0)]
    )
    assert after is None
    assert hits == [ExitHit("stop_loss", pytest.approx(98.0), 4.0, MINUTE)]  # type: ignore[arg-type]


def test_the_entry_candle_is_stepped_so_its_own_low_can_stop_the_holding() -> None:
    rules = ExitRules()
    holding = entered(rules)  # filled at the open of minute 0
    after, hits = step(holding, 0, 100.0, 100.3, 97.9, 98.2, rules)
    assert after is None
    assert hits == [ExitHit("stop_loss", pytest.approx(98.0), 4.0, 0)]  # type: ignore[arg-type]


def test_a_holding_without_a_stop_or_targets_only_counts_candles_and_its_highest_high() -> None:
    rules = ExitRules(stop_loss_pct=None, take_profits=(), breakeven_after_first_tp=False)
    holding = entered(rules)
    after, hits = run(holding, rules, [(100.0, 103.0, 50.0, 60.0), (60.0, 61.0, 1.0, 2.0)])
    assert hits == []
    assert after == replace(holding, highest=103.0, candles_held=2)


def test_a_holding_round_trips_through_json_after_each_kind_of_change() -> None:
    rules = ExitRules(trailing_pct=1.0)
    states = [entered(rules)]
    for candle in [(100.0, 100.5, 99.5, 100.0), (100.0, 101.6, 100.4, 101.0)]:
        after, _ = step(states[-1], 0, *candle, rules)
        assert after is not None
        states.append(after)
    no_stop = entered(ExitRules(stop_loss_pct=None))
    for holding in [*states, no_stop]:
        text = msgspec.json.encode(holding)
        assert msgspec.json.decode(text, type=Holding) == holding
        builtins = json.loads(json.dumps(msgspec.to_builtins(holding)))
        assert msgspec.convert(builtins, Holding) == holding
    assert states[-1].breakeven_done and states[-1].quantity == 2.0
