"""Binance-style request weight: weights in -> used weight per wall-clock minute, 429 past limit."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Final

# Weights of Binance's spot REST API (https://developers.binance.com, "Market data endpoints"
# and "Trading/Account endpoints"); openOrders without a symbol really weighs 80.
ENDPOINT_WEIGHT: Final[dict[str, int]] = {
    "klines": 2,
    "exchangeInfo": 20,
    "time": 1,
    "ping": 1,
    "newOrder": 1,
    "queryOrder": 4,
    "cancelOrder": 1,
    "openOrders": 6,
    "account": 20,
    "myTrades": 20,
}
MINUTE_S: Final = 60.0


class WeightMeter:
    """Sum request weight per wall-clock minute, as Binance's X-MBX-USED-WEIGHT-1M does.

    Limits are real time, not market time: an accelerated market clock does not refill them.
    """

    def __init__(self, limit: int | None = None, *, wall: Callable[[], float] = time.time) -> None:
        """Count weight; past `limit` per minute (None: never) requests get 429."""
        self.limit = limit
        self._wall = wall
        self._lock = threading.Lock()
        self._minute = -1
        self._used = 0

    def add(self, weight: int) -> tuple[int, float | None]:
        """Count one request; return the used weight and, when over the limit, a Retry-After."""
        with self._lock:
            now = self._wall()
            minute = int(now // MINUTE_S)
            if minute != self._minute:
                self._minute, self._used = minute, 0
            self._used += weight
            if self.limit is not None and self._used > self.limit:
                return self._used, float(math.ceil((minute + 1) * MINUTE_S - now))
            return self._used, None

    def used(self) -> int:
        """Return the weight used in the current minute."""
        with self._lock:
            return self._used if int(self._wall() // MINUTE_S) == self._minute else 0
