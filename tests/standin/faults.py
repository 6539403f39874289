"""Switchable faults of the stand-in: fault specs in -> the fault (if any) each request meets out.

Two families:

- response faults replace a whole answer for the next `count` matching requests: `RateLimited`
  (429 + Retry-After), `Banned` (418 + Retry-After), `ServerError` (5xx), `Hang` (no answer
  within the client's timeout), `Malformed` (a truncated JSON body with status 200);
- order faults are response faults of POST /api/v3/order (endpoint "newOrder" by default):
  `OrderRejected` (Binance refuses the order; nothing is placed), and two that lose the answer
  of an order the stand-in DID place and fill: `OrderServerError` (5xx) and `OrderTimeout` (no
  answer within the client's timeout). A client that resubmits blindly after those two
  places a second order;
- data faults change the candles inside a normal answer: `Omission` (given open times left out
  of the next `count` responses that would contain them, then served: a transient gap) and
  `Revision` (a candle served with different values once it has been served once).

A fault matches a request by endpoint (default klines) and, optionally, symbol (Binance id or
unified symbol). The specs are pydantic models so the control endpoint accepts them as JSON.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

ANY_ENDPOINT: Final = "*"


def market_id_of(symbol: str) -> str:
    """Return the Binance id of a unified symbol or id: ETH/BTC -> ETHBTC."""
    return symbol.replace("/", "").upper()


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str | None = Field(default=None, description="Binance id or unified; None: any")

    def matches_symbol(self, market_id: str | None) -> bool:
        """Return whether this fault applies to a request for `market_id` (None: no symbol)."""
        return self.symbol is None or (
            market_id is not None and market_id_of(self.symbol) == market_id
        )


class _ResponseSpec(_Spec):
    count: int = Field(default=1, ge=1, description="requests it answers")
    endpoint: str = Field(
        default="klines",
        description="klines, exchangeInfo, time, ping, newOrder, queryOrder, cancelOrder, "
        "openOrders, account, myTrades or *",
    )


class RateLimited(_ResponseSpec):
    """HTTP 429 with a Retry-After header, as Binance answers when the request weight is spent."""

    kind: Literal["rate_limited"] = "rate_limited"
    retry_after_s: int = Field(default=1, ge=0)


class Banned(_ResponseSpec):
    """HTTP 418 with a Retry-After header: the IP ban Binance gives clients that ignore 429s."""

    kind: Literal["banned"] = "banned"
    retry_after_s: int = Field(default=2, ge=0)


class ServerError(_ResponseSpec):
    """A 5xx answer; `binance_body` gives Binance's JSON error body, else a gateway's text page."""

    kind: Literal["server_error"] = "server_error"
    status: int = Field(default=500, ge=500, le=599)
    binance_body: bool = False


class Hang(_ResponseSpec):
    """Answer nothing until the client gives up, or answer normally after `hang_s` (late)."""

    kind: Literal["hang"] = "hang"
    hang_s: float = Field(default=30.0, gt=0)


class Malformed(_ResponseSpec):
    """Status 200, JSON content type, body cut off in the middle of the first row."""

    kind: Literal["malformed"] = "malformed"


class OrderRejected(_ResponseSpec):
    """Binance refuses the request with its JSON error (default: the order, -2010, insufficient
    balance); nothing is done. On queryOrder, -2013 hides an order that exists (a lookup
    racing the order's arrival)."""

    kind: Literal["order_rejected"] = "order_rejected"
    endpoint: str = "newOrder"
    status: int = Field(default=400, ge=400, le=499)
    code: int = -2010
    msg: str = "Account has insufficient balance for requested action."


class OrderServerError(_ResponseSpec):
    """The order is placed and filled, then the answer is a 5xx (as `ServerError` words it)."""

    kind: Literal["order_server_error"] = "order_server_error"
    endpoint: str = "newOrder"
    status: int = Field(default=500, ge=500, le=599)
    binance_body: bool = False


class OrderTimeout(_ResponseSpec):
    """The order is placed and filled, then no answer until the client gives up (or `hang_s`)."""

    kind: Literal["order_timeout"] = "order_timeout"
    endpoint: str = "newOrder"
    hang_s: float = Field(default=30.0, gt=0)


class Omission(_Spec):
    """Leave candles with these open times out of the next `count` klines answers holding them."""

    kind: Literal["omission"] = "omission"
    open_times: tuple[int, ...] = Field(min_length=1)
    interval: str | None = Field(default=None, description="None: every interval")
    count: int = Field(default=1, ge=1, description="answers the candles are left out of")


class Revision(_Spec):
    """Serve one candle first as recorded, then, from its second serving on, with new values.

    Applies to the one interval named; candles aggregated from it keep the recorded values.
    """

    kind: Literal["revision"] = "revision"
    open_time: int
    interval: str = "1m"
    close: float | None = Field(default=None, gt=0, description="None: the close x 1.001")
    volume: float | None = Field(default=None, ge=0, description="None: the volume + 1")


ResponseFault: TypeAlias = (
    RateLimited
    | Banned
    | ServerError
    | Hang
    | Malformed
    | OrderRejected
    | OrderServerError
    | OrderTimeout
)
AFTER_PROCESSING: Final = (OrderServerError, OrderTimeout)  # the request takes effect first
Fault: TypeAlias = Annotated[
    RateLimited
    | Banned
    | ServerError
    | Hang
    | Malformed
    | OrderRejected
    | OrderServerError
    | OrderTimeout
    | Omission
    | Revision,
    Field(discriminator="kind"),
]
FAULT_ADAPTER: Final[TypeAdapter[Fault]] = TypeAdapter(Fault)


@dataclass
class ActiveFault:
    """A fault on the board: its id, its spec, the requests or answers it still applies to."""

    id: int
    spec: Fault
    remaining: int
    served: bool = False  # Revision only: has the recorded version been served yet


class FaultBoard:
    """The faults in force; thread-safe (the server thread reads while a test adds)."""

    def __init__(self) -> None:
        """Start with no faults."""
        self._lock = threading.Lock()
        self._faults: list[ActiveFault] = []
        self._next_id = 1

    def add(self, spec: Fault) -> int:
        """Put a fault in force and return its id."""
        with self._lock:
            fault_id = self._next_id
            self._next_id += 1
            remaining = 1 if isinstance(spec, Revision) else spec.count
            self._faults.append(ActiveFault(fault_id, spec, remaining))
            return fault_id

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def active(self) -> list[ActiveFault]:
        """Return a copy of the faults in force, oldest first."""
        with self._lock:
            return [ActiveFault(f.id, f.spec, f.remaining, f.served) for f in self._faults]

    def take_response_fault(self, endpoint: str, market_id: str | None) -> ResponseFault | None:
        """Return the oldest response fault matching the request, and use up one of its count."""
        with self._lock:
            for fault in self._faults:
                spec = fault.spec
                if isinstance(spec, Omission | Revision):
                    continue
                if spec.endpoint not in (endpoint, ANY_ENDPOINT):
                    continue
                if not spec.matches_symbol(market_id):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return spec
            return None

    def omitted_times(self, market_id: str, interval: str) -> set[int]:
        """Return the open times that omissions in force hide for this symbol and interval."""
        with self._lock:
            return {
                t
                for fault in self._faults
                if isinstance(spec := fault.spec, Omission)
                and spec.matches_symbol(market_id)
                and spec.interval in (None, interval)
                for t in spec.open_times
            }

    def use_omissions(self, market_id: str, interval: str, hidden: set[int]) -> None:
        """Count one answer against every omission that hid one of `hidden`; drop finished ones."""
        with self._lock:
            for fault in list(self._faults):
                spec = fault.spec
                if not isinstance(spec, Omission) or not spec.matches_symbol(market_id):
                    continue
                if spec.interval in (None, interval) and hidden.intersection(spec.open_times):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)

    def revision_for(self, market_id: str, interval: str, open_time: int) -> Revision | None:
        """Return the revision to serve for a closed candle, or None to serve it as recorded.

        The first serving of a revised candle is the recorded one; it is marked served here.
        """
        with self._lock:
            for fault in self._faults:
                spec = fault.spec
                if (
                    isinstance(spec, Revision)
                    and spec.open_time == open_time
                    and spec.interval == interval
                    and spec.matches_symbol(market_id)
                ):
                    if fault.served:
                        return spec
                    fault.served = True
                    return None
            return None
