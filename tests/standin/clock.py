"""The stand-in's "now": set by hand (speed 0) or running from wall time at any speed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Clock:
    """Market time in epoch ms: `start_ms + (wall() - anchor) * speed`; speed 0 is a manual clock.

    Thread-safe: the HTTP server reads it in its own thread while a test sets it.
    """

    def __init__(
        self, start_ms: int, *, speed: float = 0.0, wall: Callable[[], float] = time.time
    ) -> None:
        """Start at `start_ms`; `speed` market seconds pass per wall second (0: only `set`)."""
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self._wall = wall
        self._lock = threading.Lock()
        self._start_ms = start_ms
        self._anchor_s = wall()
        self._speed = speed

    @property
    def speed(self) -> float:
        """Return the market seconds per wall second (0: manual)."""
        return self._speed

    def now_ms(self) -> int:
        """Return the current market time in epoch ms."""
        with self._lock:
            return self._start_ms + int((self._wall() - self._anchor_s) * self._speed * 1000)

    def set(self, now_ms: int, *, speed: float | None = None) -> None:
        """Jump to `now_ms`, optionally at a new speed; a running clock goes on from there."""
        if speed is not None and speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        with self._lock:
            self._start_ms = now_ms
            self._anchor_s = self._wall()
            if speed is not None:
                self._speed = speed

    def advance(self, ms: int) -> int:
        """Move the clock forward by `ms` and return the new time."""
        target = self.now_ms() + ms
        self.set(target)
        return target
