"""Pacing: the shared token bucket, Retry-After, backoff, the circuit breaker, source fallback."""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Awaitable
from typing import Any

import pytest

from shared.pacing import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    SourcePool,
    TokenBucket,
)

START = 1_000.0


class FakeTime:
    """A monotonic clock that moves only when every task sleeps: it jumps to the next wake-up."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._count, future))
        self._count += 1
        await future

    async def run(self, *coroutines: Awaitable[Any]) -> list[Any]:
        """Run the coroutines to completion, advancing the clock whenever all of them sleep."""
        tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
        while True:
            for _ in range(20):  # let every ready task run until it sleeps or waits its turn
                await asyncio.sleep(0)
            if all(task.done() for task in tasks):
                return [task.result() for task in tasks]
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # a cancelled sleeper
            assert self._sleepers, "deadlock: tasks wait on something other than the clock"
            wake, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            future.set_result(None)


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


async def take(bucket: TokenBucket, time: FakeTime, weight: float, log: list[Any]) -> float:
    """Acquire and note (grant time relative to START, weight, waited seconds)."""
    waited = await bucket.acquire(weight)
    log.append((time.now - START, weight, waited))
    return waited


# --- token bucket ----------------------------------------------------------------------------


async def test_concurrent_callers_are_served_in_arrival_order_without_overdrawing(
    time: FakeTime,
) -> None:
    bucket = TokenBucket(10, 1.0, clock=time.clock, sleep=time.sleep)
    grants: list[Any] = []
    waits = await time.run(*(take(bucket, time, 4, grants) for _ in range(5)))
    # 10 tokens at start: two grants at once, then one every 4 tokens refilled (2 left over).
    assert [at for at, _, _ in grants] == pytest.approx([0, 0, 2, 6, 10])
    assert waits == pytest.approx([0, 0, 2, 6, 10])
    for index, (at, _, _) in enumerate(grants):
        granted = 4 * (index + 1)
        assert granted <= 10 + 1.0 * at + 1e-6  # never more than capacity + refill so far


async def test_a_big_request_is_not_starved_by_small_ones_behind_it(time: FakeTime) -> None:
    bucket = TokenBucket(10, 1.0, clock=time.clock, sleep=time.sleep)
    grants: list[Any] = []
    await time.run(
        take(bucket, time, 10, grants),
        take(bucket, time, 8, grants),
        *(take(bucket, time, 1, grants) for _ in range(3)),
    )
    # Greedy service would hand each refilled token to a small request and make the 8 wait.
    assert [(round(at, 6), weight) for at, weight, _ in grants] == [
        (0, 10),
        (8, 8),
        (9, 1),
        (10, 1),
        (11, 1),
    ]


async def test_retry_after_grants_nothing_inside_the_window_then_restarts_from_empty(
    time: FakeTime,
) -> None:
    bucket = TokenBucket(10, 2.0, clock=time.clock, sleep=time.sleep)
    bucket.hold_until(START + 30)
    assert bucket.available == 0
    assert bucket.held_until == START + 30
    grants: list[Any] = []
    await time.run(*(take(bucket, time, 1, grants) for _ in range(3)))
    assert [at for at, _, _ in grants] == pytest.approx([30.5, 31.0, 31.5])


async def test_a_retry_after_arriving_while_a_caller_waits_delays_that_caller(
    time: FakeTime,
) -> None:
    bucket = TokenBucket(4, 1.0, clock=time.clock, sleep=time.sleep)
    await bucket.acquire(4)
    grants: list[Any] = []

    async def rate_limited_after_one_second() -> None:
        await time.sleep(1)
        bucket.hold_for(10)

    await time.run(take(bucket, time, 4, grants), rate_limited_after_one_second())
    assert [at for at, _, _ in grants] == pytest.approx([11 + 4])


async def test_a_cancelled_caller_takes_no_tokens_and_lets_the_next_one_through(
    time: FakeTime,
) -> None:
    bucket = TokenBucket(5, 1.0, clock=time.clock, sleep=time.sleep)
    await bucket.acquire(5)
    grants: list[Any] = []
    doomed = asyncio.ensure_future(take(bucket, time, 5, grants))

    async def cancel_after_two_seconds() -> None:
        await time.sleep(2)
        doomed.cancel()

    await time.run(cancel_after_two_seconds(), take(bucket, time, 3, grants))
    assert doomed.cancelled()
    assert [(round(at, 6), weight) for at, weight, _ in grants] == [(3, 3)]


async def test_a_request_heavier_than_the_bucket_is_a_value_error(time: FakeTime) -> None:
    bucket = TokenBucket(10, 1.0, clock=time.clock, sleep=time.sleep)
    with pytest.raises(ValueError, match="capacity"):
        await bucket.acquire(11)
    with pytest.raises(ValueError):
        await bucket.acquire(-1)


async def test_per_minute_budget_spreads_evenly_with_a_small_burst(time: FakeTime) -> None:
    bucket = TokenBucket.per_minute(1200 * 0.8, clock=time.clock, sleep=time.sleep)
    assert bucket.refill_per_s == pytest.approx(16)
    assert bucket.capacity == pytest.approx(160)
    grants: list[Any] = []
    await time.run(*(take(bucket, time, 10, grants) for _ in range(120)))
    in_first_minute = sum(weight for at, weight, _ in grants if at < 60)
    assert in_first_minute <= 1200  # the exchange's own limit is never reached
    assert grants[-1][0] == pytest.approx((120 * 10 - 160) / 16)


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_draws_full_jitter_under_a_doubling_capped_ceiling() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1))
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (4, 8.0), (10, 8.0), (5000, 8.0)]:
        delays = [backoff.delay(attempt) for _ in range(400)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert min(delays) < 0.05 * ceiling and max(delays) > 0.95 * ceiling


def test_backoff_is_repeatable_with_a_seed() -> None:
    first, second = Backoff(1, 30, random.Random(42)), Backoff(1, 30, random.Random(42))
    assert [first.delay(n) for n in range(8)] == [second.delay(n) for n in range(8)]


def test_next_delay_is_never_shorter_than_retry_after() -> None:
    backoff = Backoff(1, 10, random.Random(3))
    assert backoff.next_delay(2, retry_after_s=30) == 30
    assert 0 <= backoff.next_delay(2, retry_after_s=None) <= 4
    assert backoff.next_delay(20, retry_after_s=0.0) <= 10


# --- circuit breaker -------------------------------------------------------------------------


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read the state through a call, so a type checker does not pin it between transitions."""
    return breaker.state


def test_breaker_goes_through_its_whole_cycle(time: FakeTime) -> None:
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(3, 10.0, clock=time.clock, on_change=lambda *c: changes.append(c))
    assert state(breaker) is BreakerState.CLOSED and breaker.allow()
    for _ in range(3):
        breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN and state(breaker).value == 2
    time.now += 9.9
    assert not breaker.allow()
    time.now += 0.1
    assert breaker.allow(), "the cooldown is over: one trial goes through"
    assert state(breaker) is BreakerState.HALF_OPEN and state(breaker).value == 1
    assert not breaker.allow(), "exactly one trial"
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert breaker.cooldown_s == 20.0, "a failed trial doubles the cooldown"
    time.now += 19.9
    assert not breaker.allow()
    time.now += 0.1
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED and state(breaker).value == 0
    assert breaker.cooldown_s == 10.0 and breaker.retry_at is None
    C, H, O = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN  # noqa: E741
    assert changes == [(C, O), (O, H), (H, O), (O, H), (H, C)]


def test_only_consecutive_failures_open_the_breaker(time: FakeTime) -> None:
    breaker = CircuitBreaker(3, 10.0, clock=time.clock)
    for outcome in [False, False, True, False, False, True, False]:
        breaker.record_success() if outcome else breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_cooldown_doubles_only_up_to_its_cap(time: FakeTime) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=time.clock, max_cooldown_s=35.0)
    breaker.record_failure()
    cooldowns = []
    for _ in range(4):
        time.now += breaker.cooldown_s
        assert breaker.allow()
        breaker.record_failure()
        cooldowns.append(breaker.cooldown_s)
    assert cooldowns == [20.0, 35.0, 35.0, 35.0]


def test_a_trial_that_never_reports_is_replaced_after_a_cooldown(time: FakeTime) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=time.clock)
    breaker.record_failure()
    time.now += 10
    assert breaker.allow()
    time.now += 9
    assert not breaker.allow()
    time.now += 1
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN


def test_answers_arriving_while_open_do_not_change_it(time: FakeTime) -> None:
    breaker = CircuitBreaker(1, 10.0, clock=time.clock)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.retry_at == START + 10


# --- source pool -----------------------------------------------------------------------------


def test_pool_falls_back_and_returns_to_the_primary_once_it_recovers(time: FakeTime) -> None:
    changes: list[tuple[str, BreakerState, BreakerState]] = []
    pool = SourcePool(
        ["binance", "kraken"],
        clock=time.clock,
        failure_threshold=2,
        cooldown_s=30.0,
        on_change=lambda *change: changes.append(change),
    )
    assert pool.pick() == "binance" and not pool.fallback_in_use
    pool.report("binance", ok=False, latency_s=5.0)
    assert pool.pick() == "binance"
    pool.report("binance", ok=False, latency_s=5.0)
    assert pool.pick() == "kraken" and pool.current == "kraken" and pool.fallback_in_use
    pool.report("kraken", ok=True, latency_s=0.2)

    time.now += 30
    assert pool.pick() == "binance", "the primary's half-open trial"
    assert pool.pick() == "kraken", "only one trial at a time: others use the fallback"
    pool.report("binance", ok=False, latency_s=5.0)
    time.now += 30
    assert pool.pick() == "kraken", "a failed trial doubled the cooldown"
    time.now += 30
    assert pool.pick() == "binance"
    pool.report("binance", ok=True, latency_s=0.1)
    assert pool.pick() == "binance" and not pool.fallback_in_use
    assert pool.breaker("binance").state is BreakerState.CLOSED
    assert [(name, new) for name, _, new in changes] == [
        ("binance", BreakerState.OPEN),
        ("binance", BreakerState.HALF_OPEN),
        ("binance", BreakerState.OPEN),
        ("binance", BreakerState.HALF_OPEN),
        ("binance", BreakerState.CLOSED),
    ]


def test_pool_prefers_the_healthier_of_equally_preferred_sources(time: FakeTime) -> None:
    pool = SourcePool(["binance", ("kraken", "bitstamp")], clock=time.clock, failure_threshold=1)
    pool.report("binance", ok=False, latency_s=1.0)
    assert pool.pick() == "kraken", "equal health: the first listed"
    pool.report("kraken", ok=True, latency_s=3.0)
    pool.report("bitstamp", ok=True, latency_s=0.1)
    assert pool.health("bitstamp") > pool.health("kraken")
    assert pool.pick() == "bitstamp"


def test_pool_has_nothing_to_offer_while_every_breaker_is_open(time: FakeTime) -> None:
    pool = SourcePool(["binance", "kraken"], clock=time.clock, failure_threshold=1, cooldown_s=5)
    pool.report("binance", ok=False, latency_s=1.0)
    time.now += 2
    pool.report("kraken", ok=False, latency_s=1.0)
    assert pool.pick() is None
    assert pool.retry_at == START + 5
    time.now = START + 5
    assert pool.pick() == "binance"


def test_pool_rejects_duplicate_or_missing_sources(time: FakeTime) -> None:
    with pytest.raises(ValueError, match="distinct"):
        SourcePool(["binance", ("binance", "kraken")], clock=time.clock)
    with pytest.raises(ValueError):
        SourcePool([], clock=time.clock)
