"""Poll planning: when a market is due, whether the budget fits, a fair starvation-free order."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.collector.calendar import calendar_for
from services.collector.schedule import (
    Market,
    PollQueue,
    capacity,
    due_at,
    plan,
    staleness_s,
)

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
SETTLE_MS = 2_000
T0 = 1_700_000_040_000  # on the 1m grid


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("UTC")).timestamp() * 1000)


def markets(count: int, timeframe_ms: int = MINUTE_MS) -> list[Market]:
    return [Market("binance", f"COIN{index}/USDT", timeframe_ms) for index in range(count)]


# --- due times and staleness -----------------------------------------------------------------


def test_the_next_candle_is_due_just_after_it_closes() -> None:
    # The candle after T0 opens at T0 + 1m and closes at T0 + 2m; allow the exchange 2 s.
    assert due_at(T0, MINUTE_MS, SETTLE_MS) == T0 + 2 * MINUTE_MS + SETTLE_MS
    assert due_at(T0, MINUTE_MS, SETTLE_MS, calendar_for("24/7")) == T0 + 2 * MINUTE_MS + SETTLE_MS


def test_candles_of_a_closed_stock_market_are_skipped_until_it_reopens() -> None:
    nyse = calendar_for("XNYS")
    friday_last = utc_ms("2026-03-06 20:00")  # 15:00-16:00 New York, the session's last hour
    # Monday opens at 13:30 UTC (daylight saving began on Sunday): its first hourly candle is
    # the 13:00 one, due when it closes at 14:00.
    assert due_at(friday_last, HOUR_MS, SETTLE_MS, nyse) == utc_ms("2026-03-09 14:00") + SETTLE_MS
    wednesday = utc_ms("2026-03-04 15:00")
    assert due_at(wednesday, HOUR_MS, SETTLE_MS, nyse) == wednesday + 2 * HOUR_MS + SETTLE_MS


def test_staleness_counts_from_the_end_of_the_last_stored_candle() -> None:
    assert staleness_s(T0 + 5 * MINUTE_MS, T0, MINUTE_MS) == 240.0
    assert staleness_s(T0 + 30_000, T0, MINUTE_MS) == 0.0  # still open: not stale


# --- budget ----------------------------------------------------------------------------------


def test_capacity_is_the_budget_less_headroom_over_the_request_weight() -> None:
    assert capacity(1200, 2, headroom=0.2) == pytest.approx(480)
    with pytest.raises(ValueError, match="headroom"):
        capacity(1200, 2, headroom=1.0)
    with pytest.raises(ValueError):
        capacity(1200, 0, headroom=0.2)


def test_plan_says_when_every_market_fits() -> None:
    report = plan(markets(100), budget_weight_per_min=1200, weight_per_request=2, headroom=0.2)
    assert report.fits and report.markets_current == 100
    assert report.required_per_min == pytest.approx(100)
    assert report.message == (
        "request budget keeps all 100 markets current: needs 100.0 of 480.0 requests/min"
    )


def test_plan_says_how_many_markets_fit_when_not_all_do() -> None:
    report = plan(markets(1000), budget_weight_per_min=1200, weight_per_request=2, headroom=0.2)
    assert not report.fits
    assert report.markets_current == 480
    assert report.lag_periods == 3
    assert "keeps only 480 of 1000 markets current" in report.message
    assert "about every 3 candle periods" in report.message


def test_plan_counts_slow_timeframes_as_cheaper() -> None:
    mixed = markets(10, HOUR_MS) + markets(500)
    report = plan(mixed, budget_weight_per_min=600, weight_per_request=1, headroom=0.2)
    # Ten hourly markets need 1/6 request/min together; 479 one-minute ones fill the rest.
    assert report.markets_current == 10 + 479
    assert report.required_per_min == pytest.approx(500 + 10 / 60)


# --- poll queue ------------------------------------------------------------------------------


def test_a_market_is_due_only_after_its_next_candle_closes_and_settles() -> None:
    (market,) = markets(1)
    queue = PollQueue([market], settle_ms=SETTLE_MS, retry_ms=5_000)
    queue.record(market, T0)
    assert queue.next_due_ms() == T0 + 2 * MINUTE_MS + SETTLE_MS
    assert queue.due(T0 + 2 * MINUTE_MS + SETTLE_MS - 1) == []
    assert queue.due(T0 + 2 * MINUTE_MS + SETTLE_MS) == [market]


def test_a_market_with_nothing_stored_is_due_at_once_and_first() -> None:
    old, new = markets(2)
    queue = PollQueue([old, new], settle_ms=SETTLE_MS, retry_ms=5_000)
    queue.record(old, T0 - 60 * MINUTE_MS)
    now = T0 + 10 * MINUTE_MS
    assert queue.staleness_s(new, now) == math.inf
    assert queue.pick(now, limit=2) == [new, old]


def test_picks_go_to_the_most_stale_market_first() -> None:
    fresh, stale, middle = markets(3)
    queue = PollQueue([fresh, stale, middle], settle_ms=SETTLE_MS, retry_ms=5_000)
    queue.record(fresh, T0)
    queue.record(stale, T0 - 9 * MINUTE_MS)
    queue.record(middle, T0 - 3 * MINUTE_MS)
    assert queue.pick(T0 + 2 * MINUTE_MS + SETTLE_MS, limit=2) == [stale, middle]


def test_equally_stale_markets_take_turns() -> None:
    listed = markets(4)
    queue = PollQueue(listed, settle_ms=SETTLE_MS, retry_ms=0)
    for market in listed:
        queue.record(market, T0)
    now = T0 + 2 * MINUTE_MS + SETTLE_MS
    # The exchange has nothing new yet, so staleness stays equal: the turns rotate.
    picked = [queue.pick(now, limit=1)[0] for _ in range(6)]
    assert picked == [*listed, listed[0], listed[1]]


def test_a_poll_that_found_nothing_new_waits_before_the_market_is_due_again() -> None:
    (market,) = markets(1)
    queue = PollQueue([market], settle_ms=SETTLE_MS, retry_ms=5_000)
    queue.record(market, T0)
    now = T0 + 2 * MINUTE_MS + SETTLE_MS
    assert queue.pick(now, limit=1) == [market]
    assert queue.pick(now + 4_999, limit=1) == []
    assert queue.pick(now + 5_000, limit=1) == [market]
    queue.record(market, T0 + MINUTE_MS)
    assert queue.next_due_ms() == T0 + 3 * MINUTE_MS + SETTLE_MS
    queue.record(market, T0)  # an older candle changes nothing
    assert queue.last_open_ms(market) == T0 + MINUTE_MS


@pytest.mark.parametrize(("count", "per_round"), [(10, 3), (7, 2), (12, 1), (5, 5), (9, 4)])
def test_with_budget_for_k_of_n_markets_none_is_starved(count: int, per_round: int) -> None:
    listed = markets(count)
    queue = PollQueue(listed, settle_ms=SETTLE_MS, retry_ms=5_000)
    for market in listed:
        queue.record(market, T0)
    worst = {market: 0.0 for market in listed}
    for period in range(2, 200):  # each round: just after the candle opened at T0 + period - 1
        now = T0 + period * MINUTE_MS + SETTLE_MS
        for market in listed:
            worst[market] = max(worst[market], queue.staleness_s(market, now))
        for market in queue.pick(now, limit=per_round):
            queue.record(market, T0 + (period - 1) * MINUTE_MS)  # caught up to the latest
    bound_s = math.ceil(count / per_round) * 60 + SETTLE_MS / 1000
    assert max(worst.values()) <= bound_s
    assert min(worst.values()) >= (count // per_round) * 60, "the budget really was short"


def test_a_closed_stock_market_is_not_due_while_crypto_is() -> None:
    crypto = Market("binance", "BTC/USDT", HOUR_MS)
    stock = Market("alpaca", "AAPL", HOUR_MS, calendar="XNYS")
    queue = PollQueue([crypto, stock], settle_ms=SETTLE_MS, retry_ms=5_000)
    friday_last = utc_ms("2026-03-06 20:00")
    queue.record(crypto, friday_last)
    queue.record(stock, friday_last)
    saturday = utc_ms("2026-03-07 15:00")
    assert queue.due(saturday) == [crypto]
    assert queue.due_at(stock) == utc_ms("2026-03-09 14:00") + SETTLE_MS
    assert queue.due(utc_ms("2026-03-09 14:00") + SETTLE_MS) == [crypto, stock]


def test_an_unknown_calendar_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="unknown market calendar"):
        PollQueue([Market("x", "Y", HOUR_MS, calendar="MOON")], settle_ms=0, retry_ms=0)


def test_a_market_needs_a_positive_timeframe() -> None:
    with pytest.raises(ValueError, match="timeframe_ms"):
        Market("binance", "BTC/USDT", 0)
