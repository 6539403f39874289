"""Request pacing (pure): a clock and a sleep in -> when to call an exchange, and which source."""

from __future__ import annotations

import asyncio
import enum
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Float slack: after sleeping the exact computed wait, the refill can fall short by a rounding
# error; the minimum wait keeps a coarse clock from spinning on sub-nanosecond sleeps.
_TOKEN_SLACK = 1e-9
_MIN_WAIT_S = 1e-3


class TokenBucket:
    """One exchange's request-weight budget, shared by all its requests, served in arrival order."""

    def __init__(
        self,
        capacity: float,
        refill_per_s: float,
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Start full: `capacity` tokens at most, `refill_per_s` tokens back per second."""
        if capacity <= 0 or refill_per_s <= 0:
            raise ValueError(
                f"capacity and refill_per_s must be positive: {capacity}, {refill_per_s}"
            )
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._updated = clock()
        self._hold_until = -math.inf
        self._turn = asyncio.Lock()  # its waiters are woken first come, first served

    @classmethod
    def per_minute(
        cls,
        weight_per_min: float,
        *,
        burst_s: float = 10.0,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
    ) -> TokenBucket:
        """Spread `weight_per_min` evenly, allowing a burst of `burst_s` seconds' worth.

        A bucket releases at most capacity + refill * W in any W seconds, so with the default
        burst one clock minute sees at most 7/6 of `weight_per_min`: pass at most about 85% of
        the exchange's own limit (`per_minute(1200 * 0.8, ...)` for 1200 per minute).
        """
        refill_per_s = weight_per_min / 60
        return cls(refill_per_s * burst_s, refill_per_s, clock=clock, sleep=sleep)

    @property
    def available(self) -> float:
        """Tokens that could be taken right now (0 inside a Retry-After window)."""
        self._refill(self._clock())
        return self._tokens

    @property
    def held_until(self) -> float:
        """Monotonic time before which nothing is granted (-inf when there is no hold)."""
        return self._hold_until

    async def acquire(self, weight: float = 1.0) -> float:
        """Wait until `weight` tokens are free and take them; return the seconds waited."""
        if not 0 <= weight <= self.capacity:
            raise ValueError(f"weight {weight} is outside [0, capacity {self.capacity}]")
        started = self._clock()
        async with self._turn:
            while True:
                now = self._clock()
                self._refill(now)
                if now < self._hold_until:
                    wait = self._hold_until - now
                elif self._tokens >= weight - _TOKEN_SLACK:
                    self._tokens = max(0.0, self._tokens - weight)
                    return now - started
                else:
                    wait = (weight - self._tokens) / self.refill_per_s
                await self._sleep(max(wait, _MIN_WAIT_S))

    def hold_until(self, until: float) -> None:
        """Honour a Retry-After: grant nothing before monotonic time `until`, then refill from 0."""
        now = self._clock()
        self._refill(now)
        self._tokens = 0.0
        self._hold_until = max(self._hold_until, until)
        self._updated = max(self._updated, self._hold_until)  # no refill inside the window

    def hold_for(self, seconds: float) -> None:
        """Honour a Retry-After given in seconds from now."""
        self.hold_until(self._clock() + seconds)

    def _refill(self, now: float) -> None:
        if now > self._updated:
            elapsed = now - self._updated
            self._tokens = min(self.capacity, self._tokens + elapsed * self.refill_per_s)
            self._updated = now


class Backoff:
    """Exponential backoff with full jitter: retry n waits uniform(0, min(cap_s, base_s * 2**n))."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        """Take the first retry's ceiling, the largest ceiling, and a (seedable) random source."""
        if not 0 < base_s <= cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {base_s}, {cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Return the seconds to wait before retry `attempt` (0 for the first retry)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(max(attempt, 0), 64))
        return self._rng.uniform(0.0, ceiling)

    def next_delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Return the jittered delay, but never less than the exchange's Retry-After."""
        return max(self.delay(attempt), retry_after_s or 0.0)


class BreakerState(enum.IntEnum):
    """A circuit breaker's state; the value is what a gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


BreakerListener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Stop calling a failing source for a while, then let one trial call find out if it is back.

    Closed -> open after `failure_threshold` consecutive failures. Open rejects calls for the
    cooldown; then `allow()` lets exactly one trial through (half-open). The trial's success
    closes the breaker and resets the cooldown; its failure re-opens it with the cooldown
    doubled, up to `max_cooldown_s`. A trial that never reports (its task was cancelled) is
    replaced by a new one after a cooldown, so the breaker cannot stay half-open forever.
    Answers that arrive while open are ignored: they belong to calls made before it opened.
    """

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        *,
        clock: Clock,
        max_cooldown_s: float | None = None,
        on_change: BreakerListener | None = None,
    ) -> None:
        """`max_cooldown_s` defaults to 8 x cooldown_s; `on_change(old, new)` sees transitions."""
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s positive")
        self.failure_threshold = failure_threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max(cooldown_s, max_cooldown_s or 8 * cooldown_s)
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._cooldown_s = cooldown_s
        self._since = -math.inf  # when it opened, or when the half-open trial started

    @property
    def state(self) -> BreakerState:
        """The current state (it turns half-open only when `allow()` lets the trial through)."""
        return self._state

    @property
    def cooldown_s(self) -> float:
        """The cooldown in force for the current or next open period."""
        return self._cooldown_s

    @property
    def retry_at(self) -> float | None:
        """Monotonic time from which `allow()` says yes again; None while closed."""
        return None if self._state is BreakerState.CLOSED else self._since + self._cooldown_s

    @property
    def ready(self) -> bool:
        """Whether `allow()` would let a call through now (without starting a trial)."""
        retry_at = self.retry_at
        return retry_at is None or self._clock() >= retry_at

    def allow(self) -> bool:
        """Ask before each call: True means go ahead (and, unless closed, it is the trial)."""
        if not self.ready:
            return False
        if self._state is not BreakerState.CLOSED:
            self._since = self._clock()
            self._set(BreakerState.HALF_OPEN)
        return True

    def record_success(self) -> None:
        """Note a call that worked."""
        if self._state is BreakerState.HALF_OPEN:
            self._cooldown_s = self.base_cooldown_s
            self._set(BreakerState.CLOSED)
        if self._state is BreakerState.CLOSED:
            self._failures = 0

    def record_failure(self) -> None:
        """Note a call that failed (a timeout, a 5xx, a refused connection)."""
        if self._state is BreakerState.HALF_OPEN:
            self._cooldown_s = min(self.max_cooldown_s, self._cooldown_s * 2)
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()

    def _open(self) -> None:
        self._failures = 0
        self._since = self._clock()
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        old, self._state = self._state, state
        if old is not state and self._on_change is not None:
            self._on_change(old, state)


@dataclass(slots=True)
class SourceHealth:
    """Exponentially weighted averages of one source's outcomes (1 ok, 0 failed) and latency."""

    success: float = 1.0
    latency_s: float = 0.0

    def score(self, latency_ref_s: float) -> float:
        """Return a health in [0, 1]: the success rate, halved at a latency of `latency_ref_s`."""
        return self.success / (1 + self.latency_s / latency_ref_s)


class SourcePool:
    """Named candle sources in preference order (primary first), each behind its own breaker.

    `preference` lists sources or tuples of equally preferred ones: ["binance", ("kraken",
    "bitstamp")]. `pick()` returns the first source whose breaker lets a call through, so the
    primary is used again as soon as its cooldown lets a trial through; within a tuple, the
    healthiest one goes first.
    """

    def __init__(
        self,
        preference: Sequence[str | tuple[str, ...]],
        *,
        clock: Clock,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        max_cooldown_s: float | None = None,
        alpha: float = 0.2,
        latency_ref_s: float = 1.0,
        on_change: Callable[[str, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        """Build one breaker per source; `on_change(name, old, new)` sees every transition."""
        self._tiers = [(item,) if isinstance(item, str) else tuple(item) for item in preference]
        names = [name for tier in self._tiers for name in tier]
        if not names or len(set(names)) != len(names) or not all(self._tiers):
            raise ValueError(f"need distinct source names in non-empty tiers, got {preference!r}")
        if not 0 < alpha <= 1 or latency_ref_s <= 0:
            raise ValueError("need 0 < alpha <= 1 and a positive latency_ref_s")
        self._alpha = alpha
        self._latency_ref_s = latency_ref_s
        self._health = {name: SourceHealth() for name in names}
        self._breakers = {
            name: CircuitBreaker(
                failure_threshold,
                cooldown_s,
                clock=clock,
                max_cooldown_s=max_cooldown_s,
                on_change=_named(on_change, name),
            )
            for name in names
        }
        self._current: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Every source, in preference order."""
        return tuple(self._breakers)

    @property
    def current(self) -> str | None:
        """The source `pick()` returned last (None before the first pick)."""
        return self._current

    @property
    def fallback_in_use(self) -> bool:
        """Whether the source in use is a fallback rather than a primary."""
        return self._current is not None and self._current not in self._tiers[0]

    @property
    def retry_at(self) -> float | None:
        """When `pick()` can return a source again if none is ready; None if one is closed."""
        times = [breaker.retry_at for breaker in self._breakers.values()]
        return None if None in times else min(t for t in times if t is not None)

    def breaker(self, name: str) -> CircuitBreaker:
        """Return the named source's breaker (for its state gauge)."""
        return self._breakers[name]

    def health(self, name: str) -> float:
        """Return the named source's health score in [0, 1]."""
        return self._health[name].score(self._latency_ref_s)

    def pick(self) -> str | None:
        """Return the source to call now (starting its trial if half-open), None if all rest."""
        for tier in self._tiers:
            ready = [name for name in tier if self._breakers[name].ready]
            if ready:
                name = max(ready, key=self.health)  # max keeps the first of equal scores
                self._breakers[name].allow()
                self._current = name
                return name
        return None

    def report(self, name: str, ok: bool, latency_s: float) -> None:
        """Feed back the outcome and duration of a call to `name`."""
        health, breaker = self._health[name], self._breakers[name]
        health.success += self._alpha * ((1.0 if ok else 0.0) - health.success)
        health.latency_s += self._alpha * (max(0.0, latency_s) - health.latency_s)
        if ok:
            breaker.record_success()
        else:
            breaker.record_failure()


def _named(
    listener: Callable[[str, BreakerState, BreakerState], None] | None, name: str
) -> BreakerListener | None:
    if listener is None:
        return None
    return lambda old, new: listener(name, old, new)
