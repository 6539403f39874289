"""Pure exit rules of one long holding: (holding, one candle's OHLC) -> (holding, exits).

Stop-loss, a take-profit ladder, breakeven, a trailing stop and a time stop, evaluated on closed
candles, where the order of prices inside a candle is unknown. The rules `step` applies to one
candle, in this order:

1. The entry candle is stepped too. An entry fills at a candle's OPEN, so that candle's high and
   low already happen while holding: the caller opens the holding (`open_holding`) and then calls
   `step` on that same candle, and on every later candle of the symbol, in time order.
2. The effective stop is fixed when the candle starts: the higher of the fixed stop (the initial
   stop-loss, or the entry price once breakeven moved it) and the trailing stop computed from the
   highest high of the candles BEFORE this one (the entry price at first). An exit at it is a
   "trailing_stop" only when the trailing stop is strictly higher; else "stop_loss", or
   "breakeven_stop" once breakeven moved the stop.
3. Gap at the open: an open at or below the effective stop exits the whole remainder at the
   OPEN; otherwise every target at or below the open fills at the OPEN, and the candle goes on.
4. Stop first: a low at or below the effective stop exits the remainder at the stop level. When
   a stop and a target both lie inside one candle, the stop is assumed to come first (the
   pessimistic reading: OHLC cannot tell which came first).
5. Targets: each remaining target (ascending) with high >= its price fills its quantity at its
   price.
6. After the candle: a first take-profit moves the fixed stop to max(stop, entry price) when
   `breakeven_after_first_tp` is on, and the highest high takes this candle's high. Both take
   effect from the NEXT candle on: whether the high came before the low is unknown, so nothing
   learnt from a candle acts inside it.
7. Time stop: the candle count includes the entry candle; after the `time_stop_candles`-th
   candle the remainder exits at that candle's CLOSE.
8. A holding whose remaining quantity is <= 1e-12 is closed: `step` returns None for it.

Prices in `ExitHit` are market levels before slippage and fees; the caller adds those. An
`ExitHit.time_ms` is the open time of the candle it happened in (the moment inside is unknown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

EPSILON = 1e-12

ExitKind: TypeAlias = Literal[
    "stop_loss", "take_profit", "trailing_stop", "breakeven_stop", "time_stop", "signal"
]
StopKind: TypeAlias = Literal["stop_loss", "trailing_stop", "breakeven_stop"]


def _check_positive(name: str, value: float | None, *, below: float | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or None, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0 (None turns it off), got {value!r}")
    if below is not None and value >= below:
        raise ValueError(f"{name} must be < {below}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ExitRules:
    """How a long holding exits. Distances in percent of the entry price unless said otherwise.

    `stop_loss_atr` (a multiple of the entry ATR) wins over `stop_loss_pct` when set, and
    `trailing_atr` over `trailing_pct`. `take_profits` is a ladder of (distance, fraction of the
    INITIAL quantity), distances ascending, in ATR multiples when `take_profit_in_atr`.
    """

    stop_loss_pct: float | None = 2.0
    stop_loss_atr: float | None = None
    take_profits: tuple[tuple[float, float], ...] = ((1.5, 0.5), (3.0, 0.5))
    take_profit_in_atr: bool = False
    trailing_pct: float | None = None
    trailing_atr: float | None = None
    breakeven_after_first_tp: bool = True
    time_stop_candles: int | None = None

    def __post_init__(self) -> None:
        _check_positive("stop_loss_pct", self.stop_loss_pct, below=100.0)
        _check_positive("stop_loss_atr", self.stop_loss_atr)
        _check_positive("trailing_pct", self.trailing_pct, below=100.0)
        _check_positive("trailing_atr", self.trailing_atr)
        steps = self.time_stop_candles
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
            raise ValueError(f"time_stop_candles must be an integer or None, got {steps!r}")
        if steps is not None and steps < 1:
            raise ValueError(f"time_stop_candles must be >= 1 (None turns it off), got {steps}")
        ladder = tuple((float(d), float(f)) for d, f in self.take_profits)
        previous = 0.0
        for distance, fraction in ladder:
            if not math.isfinite(distance) or distance <= 0:
                raise ValueError(f"take-profit distances must be finite and > 0, got {distance}")
            if distance <= previous:
                raise ValueError(f"take-profit distances must be strictly ascending: {ladder}")
            if not 0 < fraction <= 1:
                raise ValueError(f"take-profit fractions must be in (0, 1], got {fraction}")
            previous = distance
        total = sum(fraction for _, fraction in ladder)
        if total > 1 + 1e-9:
            raise ValueError(f"take-profit fractions must sum to <= 1, got {total} in {ladder}")
        object.__setattr__(self, "take_profits", ladder)  # lists from settings become tuples

    @property
    def needs_atr(self) -> bool:
        """True when some level is in ATR multiples, so an entry needs a known ATR."""
        return (
            self.stop_loss_atr is not None
            or self.trailing_atr is not None
            or (self.take_profit_in_atr and bool(self.take_profits))
        )


@dataclass(frozen=True)
class Holding:
    """The exit state of one open long position; plain scalars and tuples, JSON round-trips.

    `targets` are the remaining (price, quantity) of the ladder, ascending. `stop` is the fixed
    stop (None: no stop-loss), moved to the entry price by breakeven. `highest` is the trailing
    anchor: the highest high of the candles stepped so far (the entry price at first).
    `entry_atr` is 0.0 when the ATR was unknown and no rule needed it.
    """

    symbol: str
    entry_time_ms: int
    entry_price: float
    initial_quantity: float
    quantity: float
    stop: float | None
    targets: tuple[tuple[float, float], ...]
    highest: float
    breakeven_done: bool
    candles_held: int
    entry_atr: float


@dataclass(frozen=True, slots=True)
class ExitHit:
    """One exit of (part of) a holding: a market level before slippage, in one candle."""

    kind: ExitKind
    price: float
    quantity: float
    time_ms: int


def stop_price(entry_price: float, atr: float, rules: ExitRules) -> float | None:
    """Return the initial stop of a long entered at `entry_price`, or None without a stop.

    A stop at or below zero could never trigger, so it is None as well.
    """
    if rules.stop_loss_atr is not None:
        stop = entry_price - rules.stop_loss_atr * atr
    elif rules.stop_loss_pct is not None:
        stop = entry_price * (1.0 - rules.stop_loss_pct / 100.0)
    else:
        return None
    return stop if stop > 0 else None


def open_holding(
    symbol: str,
    entry_time_ms: int,
    entry_price: float,
    quantity: float,
    atr: float,
    rules: ExitRules,
) -> Holding:
    """Return the holding of a long filled at `entry_price`, with its stop and target prices.

    `atr` is the ATR known at entry (the signal candle's); it must be finite and > 0 when the
    rules measure in ATR. The last target takes the exact remainder when the ladder sums to 1.
    """
    if not (math.isfinite(entry_price) and entry_price > 0):
        raise ValueError(f"entry price must be finite and > 0, got {entry_price!r}")
    if not (math.isfinite(quantity) and quantity > EPSILON):
        raise ValueError(f"quantity must be finite and > 0, got {quantity!r}")
    atr_known = math.isfinite(atr) and atr > 0
    if rules.needs_atr and not atr_known:
        raise ValueError(f"these exit rules measure in ATR: need a finite ATR > 0, got {atr!r}")
    targets: list[tuple[float, float]] = []
    rest, cumulative = quantity, 0.0
    for distance, fraction in rules.take_profits:
        if rules.take_profit_in_atr:
            price = entry_price + distance * atr
        else:
            price = entry_price * (1.0 + distance / 100.0)
        cumulative += fraction
        size = rest if cumulative >= 1.0 - 1e-9 else fraction * quantity
        rest -= size
        targets.append((price, size))
    return Holding(
        symbol=symbol,
        entry_time_ms=entry_time_ms,
        entry_price=entry_price,
        initial_quantity=quantity,
        quantity=quantity,
        stop=stop_price(entry_price, atr, rules),
        targets=tuple(targets),
        highest=entry_price,
        breakeven_done=False,
        candles_held=0,
        entry_atr=atr if atr_known else 0.0,
    )


def effective_stop(holding: Holding, rules: ExitRules) -> tuple[float | None, StopKind]:
    """Return the stop in force for the next candle and which rule set it.

    The trailing stop wins only when strictly above the fixed (or breakeven) stop.
    """
    stop = holding.stop
    kind: StopKind = "breakeven_stop" if holding.breakeven_done else "stop_loss"
    if rules.trailing_atr is not None:
        trail = holding.highest - rules.trailing_atr * holding.entry_atr
    elif rules.trailing_pct is not None:
        trail = holding.highest * (1.0 - rules.trailing_pct / 100.0)
    else:
        return stop, kind
    if stop is None or trail > stop:
        return trail, "trailing_stop"
    return stop, kind


def _fill_targets(
    targets: tuple[tuple[float, float], ...],
    quantity: float,
    reached: float,
    price: float | None,
    time_ms: int,
    hits: list[ExitHit],
) -> tuple[tuple[float, float], ...]:
    """Fill the targets at or below `reached`, at `price` (None: at each target's own level).

    Appends to `hits` and returns the targets left. Quantities are subtracted one by one in
    ladder order, as `open_holding` sized them, so a full ladder leaves exactly zero.
    """
    filled = 0
    for level, size in targets:
        if level > reached or quantity <= EPSILON:
            break
        size = min(size, quantity)
        quantity -= size
        hits.append(ExitHit("take_profit", level if price is None else price, size, time_ms))
        filled += 1
    return targets[filled:]


def _remaining(quantity: float, hits: list[ExitHit]) -> float:
    """Return `quantity` less every hit, subtracted in order (see `_fill_targets`)."""
    for hit in hits:
        quantity -= hit.quantity
    return quantity


def step(
    holding: Holding,
    candle_open_time_ms: int,
    open: float,
    high: float,
    low: float,
    close: float,
    rules: ExitRules,
) -> tuple[Holding | None, list[ExitHit]]:
    """Apply one candle (the entry candle included) to `holding`; see the module's rules.

    Returns the holding after the candle (None once closed) and the exits it made, in order.
    """
    stop, stop_kind = effective_stop(holding, rules)
    quantity = holding.quantity
    if stop is not None and open <= stop:
        return None, [ExitHit(stop_kind, open, quantity, candle_open_time_ms)]
    hits: list[ExitHit] = []
    targets = holding.targets
    if targets and open >= targets[0][0]:
        targets = _fill_targets(targets, quantity, open, open, candle_open_time_ms, hits)
        quantity = _remaining(quantity, hits)
        if quantity <= EPSILON:
            return None, hits
    if stop is not None and low <= stop:
        hits.append(ExitHit(stop_kind, stop, quantity, candle_open_time_ms))
        return None, hits
    if targets and high >= targets[0][0]:
        targets = _fill_targets(targets, quantity, high, None, candle_open_time_ms, hits)
        quantity = _remaining(holding.quantity, hits)
        if quantity <= EPSILON:
            return None, hits
    candles_held = holding.candles_held + 1
    if rules.time_stop_candles is not None and candles_held >= rules.time_stop_candles:
        hits.append(ExitHit("time_stop", close, quantity, candle_open_time_ms))
        return None, hits
    highest = high if high > holding.highest else holding.highest
    if not hits:
        # The hot path of backtests: a quiet candle changes only the anchor and the count.
        # Copying the instance dict is several times faster than the generated __init__ of a
        # frozen dataclass, and it sets no attribute on a live instance.
        quiet = object.__new__(Holding)
        state = quiet.__dict__
        state.update(holding.__dict__)
        state["highest"] = highest
        state["candles_held"] = candles_held
        return quiet, hits
    fixed = holding.stop
    breakeven = holding.breakeven_done
    if rules.breakeven_after_first_tp and not breakeven:
        fixed = holding.entry_price if fixed is None else max(fixed, holding.entry_price)
        breakeven = True
    changed = replace(
        holding,
        quantity=quantity,
        stop=fixed,
        targets=targets,
        highest=highest,
        breakeven_done=breakeven,
        candles_held=candles_held,
    )
    return changed, hits


def parse_ladder(text: str) -> tuple[tuple[float, float], ...]:
    """Parse a take-profit ladder "1.5:0.5,3:0.5" into ((1.5, 0.5), (3.0, 0.5)); "" is none.

    Raises ValueError naming the expected form; `ExitRules` checks the values themselves.
    """
    ladder = []
    for step in (part.strip() for part in text.split(",")):
        if not step:
            continue
        distance, separator, fraction = step.partition(":")
        try:
            if not separator:
                raise ValueError
            ladder.append((float(distance), float(fraction)))
        except ValueError:
            raise ValueError(
                f"expected DISTANCE:FRACTION[,...] like 1.5:0.5,3:0.5, got {text!r}"
            ) from None
    return tuple(ladder)
