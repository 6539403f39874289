"""Trading hours (pure): a market's calendar name in -> whether it is open at a UTC epoch ms."""

from __future__ import annotations

import functools
import warnings
from typing import Final, Protocol

import exchange_calendars as xcals
import pandas as pd

ALWAYS_OPEN_NAME: Final = "24/7"
_MINUTE_MS: Final = 60_000


class MarketCalendar(Protocol):
    """When a market trades, in UTC epoch milliseconds."""

    def is_open(self, ms: int) -> bool:
        """Return whether the market trades at `ms`."""
        ...

    def next_open(self, ms: int) -> int:
        """Return the earliest time at or after `ms` when the market trades (`ms` if open now)."""
        ...


class AlwaysOpen:
    """A market that never closes: crypto, 24 hours a day, 7 days a week."""

    def is_open(self, ms: int) -> bool:
        """Return True: the market is always open."""
        return True

    def next_open(self, ms: int) -> int:
        """Return `ms`: the market is open now."""
        return ms

    def __repr__(self) -> str:
        return "AlwaysOpen()"


class ExchangeCalendar:
    """A stock exchange's sessions (holidays, early closes, lunch breaks) by ISO 10383 code.

    Backed by the `exchange-calendars` package at minute resolution: a time inside a minute
    counts as that minute. Its sessions cover about twenty years back to one year ahead of
    the moment the calendar was built; a time outside them raises ValueError.
    """

    def __init__(self, code: str) -> None:
        """Load the calendar of `code` ("XNYS", "XLON", ...); ValueError if there is none."""
        self.code = code
        self._calendar = _load(code)

    def is_open(self, ms: int) -> bool:
        """Return whether the exchange trades during the minute holding `ms`."""
        return bool(self._calendar.is_open_on_minute(_minute(ms)))

    def next_open(self, ms: int) -> int:
        """Return `ms` if the exchange trades then, else the start of its next trading minute."""
        if self.is_open(ms):
            return ms
        # Not next_open(): that skips the end of a lunch break (XHKG, XTKS) to the next session.
        minute = self._calendar.minute_to_trading_minute(_minute(ms), direction="next")
        return int(minute.value // 1_000_000)

    def __repr__(self) -> str:
        return f"ExchangeCalendar({self.code!r})"


def was_open_during(calendar: MarketCalendar, start_ms: int, end_ms: int) -> bool:
    """Return whether the market traded at some time in [start_ms, end_ms): a candle's span."""
    return calendar.next_open(start_ms) < end_ms


@functools.cache
def calendar_for(name: str) -> MarketCalendar:
    """Return the (cached) calendar named "24/7" or by an exchange code; ValueError if unknown."""
    if name == ALWAYS_OPEN_NAME:
        return AlwaysOpen()
    return ExchangeCalendar(name)


@functools.cache
def _load(code: str) -> xcals.ExchangeCalendar:
    # Building a calendar computes years of sessions (about 0.1 s): build each one once, and
    # fill its lazy caches now, with the library's own pandas deprecation notices silenced.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            calendar = xcals.get_calendar(code)
            first = calendar.first_minute
            calendar.is_open_on_minute(first)
            calendar.minute_to_trading_minute(first, direction="next")
            return calendar
    except xcals.errors.InvalidCalendarName:
        known = ", ".join(["24/7", "XNYS", "XNAS", "XLON", "XETR", "XPAR", "XTKS", "XHKG"])
        raise ValueError(
            f"unknown market calendar {code!r}: expected {known}, "
            "or another code of exchange_calendars.get_calendar_names()"
        ) from None


def _minute(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms - ms % _MINUTE_MS, unit="ms", tz="UTC")
