"""The stand-in's request log: one record per request in -> counts and Retry-After checks out."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

NO_ANSWER = 0  # status of a request the stand-in never answered (a hang the client gave up on)


@dataclass(frozen=True)
class RequestRecord:
    """One request: when it came (market clock, monotonic and epoch wall time), what, the answer."""

    index: int
    clock_ms: int  # the stand-in's market clock on arrival
    monotonic_s: float  # time.monotonic() on arrival; system-wide on Linux, so other processes
    wall_s: float  # time.time() on arrival
    answered_monotonic_s: float  # time.monotonic() when the answer (or give-up) was done
    path: str
    symbol: str | None
    interval: str | None
    start_time: int | None
    end_time: int | None
    limit: int | None
    status: int  # NO_ANSWER for a hang
    rows: int  # candles in the answer
    fault: str | None  # the fault kind that shaped the answer, if any
    retry_after_s: float | None  # the Retry-After header sent, if any
    used_weight: int | None  # the X-MBX-USED-WEIGHT-1M header sent, if weight is counted
    method: str = "GET"
    client_order_id: str | None = None  # newClientOrderId or origClientOrderId, order endpoints

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return asdict(self)


class RequestLog:
    """Every request the stand-in saw, in arrival order; thread-safe."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._next_index = 0

    def next_index(self) -> int:
        """Reserve the index of a request that just arrived."""
        with self._lock:
            index = self._next_index
            self._next_index += 1
            return index

    def append(self, record: RequestRecord) -> None:
        """Keep a finished request's record."""
        with self._lock:
            self._records.append(record)

    def clear(self) -> None:
        """Forget every record (indexes keep counting)."""
        with self._lock:
            self._records.clear()

    def records(self, *, path: str | None = None, since_index: int = 0) -> list[RequestRecord]:
        """Return the records in arrival order, optionally of one path and from an index on."""
        with self._lock:
            chosen = [
                r
                for r in self._records
                if r.index >= since_index and (path is None or r.path == path)
            ]
        return sorted(chosen, key=lambda r: r.index)


def inside_retry_windows(
    records: Iterable[RequestRecord], *, grace_s: float = 0.0
) -> list[RequestRecord]:
    """Return the requests that arrived while an earlier Retry-After was still running.

    A window opens when a 429/418 answer with Retry-After is sent and lasts that many seconds;
    `grace_s` forgives requests already on the wire when the answer went out.
    """
    ordered = sorted(records, key=lambda r: r.monotonic_s)
    windows = [
        (r.answered_monotonic_s + grace_s, r.answered_monotonic_s + r.retry_after_s)
        for r in ordered
        if r.retry_after_s is not None and r.status in (418, 429)
    ]
    return [r for r in ordered if any(start < r.monotonic_s < end for start, end in windows)]
