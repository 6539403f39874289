"""Pure pre-trade risk checks: (limits, book, one intended entry) -> why it is blocked, or None.

Only entries are checked: exits (stops, targets, sell signals) are never blocked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits on new entries; None turns a limit off. Money in quote currency.

    `cooldown_ms` counts from the time a position in the symbol closed. `max_daily_loss` halts
    entries for the rest of the UTC day once the day's realised loss reaches it.
    `stale_after_ms`: no entry in a symbol whose newest candle closed longer ago than this.
    `kill_switch`: set by hand, halts every entry. `paused`: symbols paused by hand, no entry
    there.
    """

    max_open_positions: int | None = 5
    max_notional_per_symbol: float | None = None
    max_notional_total: float | None = None
    cooldown_ms: int = 0
    max_daily_loss: float | None = None
    stale_after_ms: int | None = None
    kill_switch: bool = False
    paused: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("max_open_positions", "stale_after_ms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer or None, got {value!r}")
        if self.max_open_positions is not None and self.max_open_positions < 1:
            raise ValueError(f"max_open_positions must be >= 1, got {self.max_open_positions}")
        if self.stale_after_ms is not None and self.stale_after_ms < 0:
            raise ValueError(f"stale_after_ms must be >= 0, got {self.stale_after_ms}")
        if isinstance(self.cooldown_ms, bool) or not isinstance(self.cooldown_ms, int):
            raise ValueError(f"cooldown_ms must be an integer, got {self.cooldown_ms!r}")
        if self.cooldown_ms < 0:
            raise ValueError(f"cooldown_ms must be >= 0, got {self.cooldown_ms}")
        for name in ("max_notional_per_symbol", "max_notional_total", "max_daily_loss"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0 (None turns it off): {value!r}")


@dataclass(frozen=True, slots=True)
class BookView:
    """What the risk checks need to know about one account, built by the trader.

    `open_notionals`: per symbol, the notional of the open holding or pending entry (every key
    counts as one open position). `last_closed_ms`: per symbol, when its last position closed.
    `realized_pnl_today`: realised PnL since the last UTC midnight, fees included.
    """

    open_notionals: Mapping[str, float] = field(default_factory=dict)
    last_closed_ms: Mapping[str, int] = field(default_factory=dict)
    realized_pnl_today: float = 0.0


def entry_blocked(
    limits: RiskLimits,
    book: BookView,
    *,
    symbol: str,
    notional: float,
    now_ms: int,
    last_candle_ms: int | None,
) -> str | None:
    """Return why an entry of `notional` in `symbol` at `now_ms` is refused, or None if allowed.

    `last_candle_ms` is when the symbol's newest candle closed (None: no candle seen). The
    reason is one of: kill_switch, paused, max_open_positions, max_notional_symbol,
    max_notional_total, cooldown, daily_loss, stale_data (checked in that order).
    """
    if limits.kill_switch:
        return "kill_switch"
    if symbol in limits.paused:
        return "paused"
    held = book.open_notionals
    most = limits.max_open_positions
    if most is not None and symbol not in held and len(held) >= most:
        return "max_open_positions"
    per_symbol = limits.max_notional_per_symbol
    if per_symbol is not None and held.get(symbol, 0.0) + notional > per_symbol:
        return "max_notional_symbol"
    total = limits.max_notional_total
    if total is not None and sum(held.values()) + notional > total:
        return "max_notional_total"
    closed = book.last_closed_ms.get(symbol)
    if closed is not None and now_ms < closed + limits.cooldown_ms:
        return "cooldown"
    if limits.max_daily_loss is not None and -book.realized_pnl_today >= limits.max_daily_loss:
        return "daily_loss"
    stale = limits.stale_after_ms
    if stale is not None and (last_candle_ms is None or now_ms - last_candle_ms > stale):
        return "stale_data"
    return None
