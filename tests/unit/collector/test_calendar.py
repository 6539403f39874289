"""Market calendars: 24/7 crypto, stock exchange sessions, holidays, early closes, breaks."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.collector.calendar import (
    AlwaysOpen,
    ExchangeCalendar,
    calendar_for,
    was_open_during,
)

HOUR_MS = 3_600_000
MINUTE_MS = 60_000


def ms(local: str, zone: str = "America/New_York") -> int:
    """Return the UTC epoch ms of a wall-clock time in `zone`."""
    return int(datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


@pytest.fixture
def nyse() -> ExchangeCalendar:
    calendar = calendar_for("XNYS")
    assert isinstance(calendar, ExchangeCalendar)
    return calendar


def test_nyse_is_open_at_three_in_the_afternoon_new_york_time_on_a_weekday(
    nyse: ExchangeCalendar,
) -> None:
    assert nyse.is_open(ms("2026-03-04 15:00"))  # a Wednesday
    assert nyse.is_open(ms("2026-03-04 09:30"))
    assert not nyse.is_open(ms("2026-03-04 09:29:59"))
    assert not nyse.is_open(ms("2026-03-04 16:00"))


def test_nyse_is_closed_on_a_weekend(nyse: ExchangeCalendar) -> None:
    assert not nyse.is_open(ms("2026-03-07 15:00"))  # Saturday
    assert not nyse.is_open(ms("2026-03-08 11:00"))  # Sunday


def test_nyse_is_closed_on_christmas_day(nyse: ExchangeCalendar) -> None:
    assert not nyse.is_open(ms("2026-12-25 15:00"))  # a Friday
    assert not nyse.is_open(ms("2026-12-25 10:00"))


def test_nyse_closes_early_on_christmas_eve_and_after_thanksgiving(nyse: ExchangeCalendar) -> None:
    for day in ("2026-12-24", "2026-11-27"):
        assert nyse.is_open(ms(f"{day} 12:59"))
        assert not nyse.is_open(ms(f"{day} 13:00"))
        assert not nyse.is_open(ms(f"{day} 15:00"))


def test_next_open_after_a_weekend_is_monday_half_past_nine_across_the_clock_change(
    nyse: ExchangeCalendar,
) -> None:
    # Daylight saving starts on Sunday 2026-03-08: Friday closes 21:00 UTC, Monday opens 13:30.
    assert nyse.next_open(ms("2026-03-06 16:00")) == ms("2026-03-09 09:30")
    assert nyse.next_open(ms("2026-03-07 12:34:56")) == ms("2026-03-09 09:30")
    assert ms("2026-03-09 09:30") == ms("2026-03-09 13:30", "UTC")


def test_next_open_skips_the_christmas_holiday_and_the_weekend(nyse: ExchangeCalendar) -> None:
    assert nyse.next_open(ms("2026-12-24 14:00")) == ms("2026-12-28 09:30")


def test_next_open_of_an_open_time_is_that_time(nyse: ExchangeCalendar) -> None:
    inside = ms("2026-03-04 15:00:30")
    assert nyse.next_open(inside) == inside
    assert nyse.next_open(ms("2026-03-04 09:29:30")) == ms("2026-03-04 09:30")


def test_london_has_its_own_hours_and_holidays() -> None:
    london = calendar_for("XLON")
    assert london.is_open(ms("2026-12-29 10:00", "Europe/London"))
    assert not london.is_open(ms("2026-12-29 16:30", "Europe/London"))
    assert not london.is_open(ms("2026-12-24 12:30", "Europe/London"))  # early close at 12:30
    # Boxing Day falls on a Saturday in 2026: the holiday moves to Monday the 28th.
    assert not london.is_open(ms("2026-12-28 10:00", "Europe/London"))
    assert london.next_open(ms("2026-12-24 13:00", "Europe/London")) == ms(
        "2026-12-29 08:00", "Europe/London"
    )


def test_next_open_during_a_lunch_break_is_the_end_of_the_break() -> None:
    hong_kong = calendar_for("XHKG")
    lunch = ms("2026-03-03 12:30", "Asia/Hong_Kong")
    assert not hong_kong.is_open(lunch)
    assert hong_kong.next_open(lunch) == ms("2026-03-03 13:00", "Asia/Hong_Kong")


def test_crypto_is_always_open() -> None:
    crypto = calendar_for("24/7")
    assert isinstance(crypto, AlwaysOpen)
    saturday = ms("2026-03-07 03:00")
    assert crypto.is_open(saturday)
    assert crypto.is_open(ms("2026-12-25 15:00"))
    assert crypto.next_open(saturday) == saturday


def test_a_candle_is_pollable_when_the_market_was_open_during_it(nyse: ExchangeCalendar) -> None:
    # The 13:00-14:00 UTC candle of Monday 2026-03-09 holds the 13:30 UTC open.
    monday_13_utc = ms("2026-03-09 13:00", "UTC")
    assert was_open_during(nyse, monday_13_utc, monday_13_utc + HOUR_MS)
    assert not was_open_during(nyse, monday_13_utc, monday_13_utc + 30 * MINUTE_MS)
    saturday = ms("2026-03-07 15:00")
    assert not was_open_during(nyse, saturday, saturday + MINUTE_MS)
    christmas = ms("2026-12-25 00:00", "UTC")
    assert not was_open_during(nyse, christmas, christmas + 24 * HOUR_MS)
    assert was_open_during(AlwaysOpen(), saturday, saturday + MINUTE_MS)


def test_calendars_are_built_once_per_name() -> None:
    assert calendar_for("XNYS") is calendar_for("XNYS")
    assert calendar_for("24/7") is calendar_for("24/7")


def test_an_unknown_calendar_name_is_a_clear_error_listing_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown market calendar 'NOPE'.*24/7.*XNYS.*XLON"):
        calendar_for("NOPE")
