"""API models: query strings and WebSocket requests in, JSON responses out (not rows, not wire)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Final, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from shared.messages import TIMEFRAME_MS, Side

MAX_LIMIT: Final = 5_000
DEFAULT_LIMIT: Final = 500

_SYMBOL = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")


def is_symbol(text: str) -> bool:
    """Return whether `text` names a market as `BASE/QUOTE` (e.g. `ETH/BTC`)."""
    return _SYMBOL.fullmatch(text) is not None


def _check_symbol(value: str) -> str:
    if not is_symbol(value):
        raise ValueError(
            f"symbol must look like BASE/QUOTE in capitals (e.g. ETH/BTC), not {value!r}"
        )
    return value


def _check_timeframe(value: str) -> str:
    if value not in TIMEFRAME_MS:
        raise ValueError(f"timeframe must be one of {', '.join(TIMEFRAME_MS)}, not {value!r}")
    return value


def _nan_to_none(value: object) -> object:
    # JSON has no NaN: an indicator still warming up is null to clients.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


Symbol = Annotated[
    str,
    AfterValidator(_check_symbol),
    Field(examples=["ETH/BTC"], json_schema_extra={"pattern": _SYMBOL.pattern}),
]
Timeframe = Annotated[
    str, AfterValidator(_check_timeframe), Field(json_schema_extra={"enum": list(TIMEFRAME_MS)})
]
Milliseconds = Annotated[int, Field(ge=0, description="UTC epoch milliseconds")]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="at most this many rows")]
Number = Annotated[float | None, BeforeValidator(_nan_to_none), Field(description="null: NaN")]


class _TimeRange(BaseModel):
    """Query parameters every time-series endpoint takes; unknown parameters are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_ms: Milliseconds | None = Field(default=None, description="first time, inclusive")
    end_ms: Milliseconds | None = Field(default=None, description="last time, inclusive")
    limit: Limit = DEFAULT_LIMIT

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start_ms is not None and self.end_ms is not None and self.start_ms > self.end_ms:
            raise ValueError(f"start_ms ({self.start_ms}) must be <= end_ms ({self.end_ms})")
        return self


class MarketQuery(_TimeRange):
    """Which market's candles or indicators to read."""

    exchange: str | None = Field(default=None, min_length=1, max_length=64)
    symbol: Symbol
    timeframe: Timeframe


class HistoryQuery(_TimeRange):
    """Which signals, orders or fills to read; every symbol when `symbol` is omitted."""

    symbol: Symbol | None = None


class PositionQuery(BaseModel):
    """Which positions to read; every market when `symbol` is omitted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Symbol | None = None


class _Response(BaseModel):
    # from_attributes: built straight from the store's row dataclasses, ignoring extra columns.
    model_config = ConfigDict(from_attributes=True, frozen=True)


class Candle(_Response):
    """One closed candle."""

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Indicators(_Response):
    """Indicator values of one candle; null while an indicator is still warming up."""

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    close: float
    rsi: Number
    stoch_k: Number
    stoch_d: Number
    stochrsi_fastk: Number
    stochrsi_fastd: Number
    atr: Number
    volatility_ratio: Number
    band_lower: Number
    band_upper: Number
    prev_stoch_k: Number
    prev_band_lower: Number
    prev_band_upper: Number
    candle_closed_at_ms: int


class Signal(_Response):
    """A strategy's decision to buy or sell."""

    signal_id: str
    strategy: str
    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    side: Side
    price: float
    reason: str
    candle_closed_at_ms: int


class Order(_Response):
    """An order placed for a signal, with its current status."""

    client_order_id: str
    signal_id: str
    exchange: str
    symbol: str
    side: Side
    order_type: str
    quantity: float
    status: str
    created_at_ms: int
    candle_closed_at_ms: int


class Fill(_Response):
    """A fill of an order."""

    fill_id: str
    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    price: float
    quantity: float
    fee: float
    filled_at_ms: int


class Position(_Response):
    """The position in one market."""

    exchange: str
    symbol: str
    quantity: float
    avg_price: float
    realized_pnl: float
    updated_at_ms: int
    cause_fill_id: str


class Health(BaseModel):
    """Liveness: `ok` while the relay feeds WebSocket clients."""

    status: Literal["ok", "relay stopped"]
    websocket_clients: int


class ChannelRequest(BaseModel):
    """A WebSocket client's request to add or remove channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["subscribe", "unsubscribe"]
    channels: list[str] = Field(min_length=1)
