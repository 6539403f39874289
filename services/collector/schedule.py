"""Poll planning (pure): markets, a request budget and stored candles in -> what to poll, when."""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

from services.collector.calendar import ALWAYS_OPEN_NAME, MarketCalendar, calendar_for

_MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Market:
    """One candle series to keep current; `calendar` is a name for `calendar_for`."""

    exchange: str
    symbol: str
    timeframe_ms: int
    calendar: str = ALWAYS_OPEN_NAME

    def __post_init__(self) -> None:
        if self.timeframe_ms <= 0:
            raise ValueError(f"timeframe_ms must be positive, got {self.timeframe_ms}")


def due_at(
    last_open_ms: int, timeframe_ms: int, settle_ms: int, calendar: MarketCalendar | None = None
) -> int:
    """Return when to poll for the first candle after `last_open_ms`: its close plus settle_ms.

    Candles during which `calendar` says the market was closed are skipped: after Friday's last
    candle of a stock market, the next poll is due when Monday's first candle has closed.
    """
    next_open_ms = last_open_ms + timeframe_ms
    if calendar is not None:
        trading_ms = calendar.next_open(next_open_ms)
        next_open_ms += (trading_ms - next_open_ms) // timeframe_ms * timeframe_ms
    return next_open_ms + timeframe_ms + settle_ms


def staleness_s(now_ms: int, last_open_ms: int, timeframe_ms: int) -> float:
    """Return the seconds since the end of the last stored candle (0 while it is still open)."""
    return max(0, now_ms - (last_open_ms + timeframe_ms)) / 1000


def capacity(budget_weight_per_min: float, weight_per_request: float, headroom: float) -> float:
    """Return how many requests per minute fit the budget, keeping `headroom` (0.2: 20%) spare."""
    if budget_weight_per_min <= 0 or weight_per_request <= 0:
        raise ValueError("budget_weight_per_min and weight_per_request must be positive")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom is the spare fraction of the budget, in [0, 1); got {headroom}")
    return budget_weight_per_min * (1 - headroom) / weight_per_request


@dataclass(frozen=True, slots=True)
class PollPlan:
    """Whether one exchange's request budget keeps all its markets current each candle period."""

    markets: int
    markets_current: int
    required_per_min: float
    capacity_per_min: float

    @property
    def fits(self) -> bool:
        """True when every market can be polled once per candle period."""
        return self.markets_current == self.markets

    @property
    def lag_periods(self) -> int:
        """About how many candle periods apart each market is polled when they share the budget."""
        return max(1, math.ceil(self.required_per_min / self.capacity_per_min - 1e-9))

    @property
    def message(self) -> str:
        """One human-readable line for the start-up log."""
        needs = f"{self.required_per_min:.1f} of {self.capacity_per_min:.1f} requests/min"
        if self.fits:
            return f"request budget keeps all {self.markets} markets current: needs {needs}"
        return (
            f"request budget keeps only {self.markets_current} of {self.markets} markets current"
            f" (they need {self.required_per_min:.1f} requests/min, the budget allows"
            f" {self.capacity_per_min:.1f}); each market is still polled, about every"
            f" {self.lag_periods} candle periods"
        )


def plan(
    markets: Sequence[Market],
    *,
    budget_weight_per_min: float,
    weight_per_request: float,
    headroom: float,
) -> PollPlan:
    """Return whether one exchange's markets fit its budget at one request per candle period."""
    limit = capacity(budget_weight_per_min, weight_per_request, headroom)
    needs = sorted(_MINUTE_MS / market.timeframe_ms for market in markets)
    # Cheapest first: the largest number of markets that could be kept current together.
    current, used = 0, 0.0
    for need in needs:
        if used + need > limit + 1e-9:
            break
        current, used = current + 1, used + need
    return PollPlan(len(needs), current, sum(needs), limit)


class PollQueue:
    """Due markets in poll order: most stale first, ties round-robin, a limit per round.

    Stale: the longest since its newest stored candle closed or since it was last asked,
    whichever is shorter.

    Feed it the last stored candle of each market with `record`. A picked market that made no
    progress (the exchange had not finalised the candle yet) waits `retry_ms` before it is due
    again, so an early poll does not turn into a tight loop; if the second try makes none
    either (an illiquid market: no trade that minute), it waits for the next candle's close.
    """

    def __init__(self, markets: Iterable[Market], *, settle_ms: int, retry_ms: int) -> None:
        """Track `markets` (duplicates dropped); calendar names are checked here, at start."""
        self._markets = tuple(dict.fromkeys(markets))
        self._settle_ms = settle_ms
        self._retry_ms = retry_ms
        self._calendars = {market: calendar_for(market.calendar) for market in self._markets}
        self._last_open_ms: dict[Market, int] = {}
        self._retry_at_ms: dict[Market, int] = {}
        self._misses: dict[Market, int] = {}
        self._asked_ms: dict[Market, int] = {}  # picks since the market last made progress
        # Sequence number of each market's last pick; before any pick, the input order.
        self._turn = {
            market: index - len(self._markets) for index, market in enumerate(self._markets)
        }
        self._picks = 0

    @property
    def markets(self) -> tuple[Market, ...]:
        """Every tracked market, in input order."""
        return self._markets

    def record(self, market: Market, last_open_ms: int) -> None:
        """Note the open time of the market's newest stored candle (older values are ignored)."""
        previous = self._last_open_ms.get(market)
        if previous is None or last_open_ms > previous:
            self._last_open_ms[market] = last_open_ms
            self._retry_at_ms.pop(market, None)
            self._misses.pop(market, None)

    def last_open_ms(self, market: Market) -> int | None:
        """Return the open time of the newest stored candle, or None before the first one."""
        return self._last_open_ms.get(market)

    def due_at(self, market: Market) -> int:
        """Return when the market is next due (0 if nothing is stored yet: due at once)."""
        last_open_ms = self._last_open_ms.get(market)
        due_ms = 0
        if last_open_ms is not None:
            calendar = None if market.calendar == ALWAYS_OPEN_NAME else self._calendars[market]
            due_ms = due_at(last_open_ms, market.timeframe_ms, self._settle_ms, calendar)
        return max(due_ms, self._retry_at_ms.get(market, 0))

    def next_due_ms(self) -> int | None:
        """Return the earliest time any market is due (to sleep until then), None if none."""
        return min((self.due_at(market) for market in self._markets), default=None)

    def due(self, now_ms: int) -> list[Market]:
        """Return the markets due at `now_ms`, in input order."""
        return [market for market in self._markets if self.due_at(market) <= now_ms]

    def staleness_s(self, market: Market, now_ms: int) -> float:
        """Return the seconds since the market's newest stored candle closed (inf if none)."""
        last_open_ms = self._last_open_ms.get(market)
        if last_open_ms is None:
            return math.inf
        return staleness_s(now_ms, last_open_ms, market.timeframe_ms)

    def _unknown_s(self, market: Market, now_ms: int) -> float:
        """Seconds since what is known of the market was last brought up to date: since its
        newest stored candle closed, or since it was last asked, whichever is later. An
        illiquid market whose newest candle is old because nobody traded is not more urgent
        than one asked just as long ago."""
        staleness = self.staleness_s(market, now_ms)
        asked_ms = self._asked_ms.get(market)
        return staleness if asked_ms is None else min(staleness, (now_ms - asked_ms) / 1000)

    def pick(self, now_ms: int, limit: int, skip: Container[Market] = ()) -> list[Market]:
        """Return up to `limit` due markets to poll now, most stale first, and mark them polled;
        markets in `skip` (busy elsewhere) wait for a later pick."""
        due = [market for market in self.due(now_ms) if market not in skip]
        due.sort(key=lambda market: (-self._unknown_s(market, now_ms), self._turn[market]))
        picked = due[: max(0, limit)]
        for market in picked:
            self._asked_ms[market] = now_ms
            self._turn[market] = self._picks
            self._picks += 1
            misses = self._misses.get(market, 0)
            self._misses[market] = misses + 1
            if misses == 0:  # not back before `retry_ms`, or before progress is recorded
                self._retry_at_ms[market] = now_ms + self._retry_ms
            else:  # asked again in vain (no trade yet?): wait for the next candle's close
                tf = market.timeframe_ms
                self._retry_at_ms[market] = max(
                    now_ms + self._retry_ms, (now_ms // tf + 1) * tf + self._settle_ms
                )
        return picked
