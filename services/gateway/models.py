"""API models: query strings and WebSocket requests in, JSON responses out (not rows, not wire)."""

from __future__ import annotations

import base64
import math
import re
from typing import Annotated, Final, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from shared.messages import TIMEFRAME_MS, Side
from shared.store_pages import Direction
from shared.store_pages import Position as PagePosition

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
    Field(examples=["ETH/BTC"], json_schema_extra={"pattern": f"^{_SYMBOL.pattern}$"}),
]
Timeframe = Annotated[
    str, AfterValidator(_check_timeframe), Field(json_schema_extra={"enum": list(TIMEFRAME_MS)})
]
# Well past any candle (the year 33658) and far inside Postgres' BIGINT, so that no bound, nor
# a bound plus a timeframe, overflows in the database.
MAX_MS: Final = 10**15
Exchange = Annotated[
    str,
    Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", examples=["binance"],
        description="the exchange's id, as ccxt names it",
    ),
]  # fmt: skip
Milliseconds = Annotated[int, Field(ge=0, le=MAX_MS, description="UTC epoch milliseconds")]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="at most this many rows")]
Number = Annotated[float | None, BeforeValidator(_nan_to_none), Field(description="null: NaN")]


def encode_cursor(position: PagePosition) -> str:
    """Return the opaque cursor of a page position."""
    text = f"{position.direction[0]}{position.open_time_ms}:{position.exchange}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> PagePosition:
    """Return the page position of a cursor (ValueError if it is not one)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned") from None
    found = _CURSOR.fullmatch(text)
    if found is None:
        raise ValueError("cursor is not one this API returned")
    direction: Direction = "after" if found["direction"] == "a" else "before"
    return PagePosition(direction, int(found["time"]), found["exchange"])


def _check_cursor(value: str) -> str:
    decode_cursor(value)
    return value


_CURSOR = re.compile(r"(?P<direction>[ab])(?P<time>[0-9]{1,15}):(?P<exchange>.{1,64})", re.DOTALL)

Cursor = Annotated[
    str,
    AfterValidator(_check_cursor),
    Field(min_length=4, max_length=128, json_schema_extra={"pattern": "^[A-Za-z0-9_-]+$"}),
]


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
    """Which market's candles or indicators to read, and from which page on."""

    exchange: Exchange | None = Field(default=None, description="every exchange when omitted")
    symbol: Symbol
    timeframe: Timeframe
    cursor: Cursor | None = Field(
        default=None,
        description="the X-Next-Cursor of the previous page: continue from there (older pages "
        "when the first had no start_ms, newer ones when it had)",
    )

    @property
    def position(self) -> PagePosition | None:
        """Where the cursor points, if one was given."""
        return None if self.cursor is None else decode_cursor(self.cursor)


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


EntryId = Annotated[
    str, Field(pattern=r"^[0-9]{1,20}(-[0-9]{1,20})?$", examples=["1700000000000-0"])
]


class ChannelRequest(BaseModel):
    """A WebSocket client's request to add or remove channels (and to resume streams)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["subscribe", "unsubscribe"]
    channels: list[str] = Field(min_length=1)
    since: dict[str, EntryId] | None = Field(
        default=None,
        description="per stream, the last entry id the client has: what came after it is "
        "sent before the stream's live events",
    )


class SymbolQuery(BaseModel):
    """Which markets' status to read; every market when both are omitted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Symbol | None = None
    timeframe: Timeframe | None = None


class MarketStatus(BaseModel):
    """A market's newest stored candle, how old it is, and where it came from."""

    exchange: str
    symbol: str
    timeframe: str
    last_open_time_ms: int
    last_close_time_ms: int = Field(description="when the newest candle closed")
    last_close: float
    source: str = Field(description="what delivered the newest candle (exchange, replay, ...)")
    staleness_s: float = Field(description="seconds since the newest candle closed")
    stale: bool = Field(description="no candle closed for two whole timeframes")
    paused: bool = Field(description="new entries paused by hand for this symbol")


class ComputedQuery(_TimeRange):
    """A market, a range, and the indicator parameters to compute its indicators with."""

    exchange: Exchange = "binance"
    symbol: Symbol
    timeframe: Timeframe
    rsi_period: int = Field(default=14, ge=1, le=1_000)
    stoch_period: int = Field(default=14, ge=1, le=1_000)
    stoch_k_period: int = Field(default=3, ge=1, le=1_000)
    stoch_d_period: int = Field(default=3, ge=1, le=1_000)
    stochrsi_fastk_period: int = Field(default=14, ge=1, le=1_000)
    stochrsi_fastd_period: int = Field(default=3, ge=1, le=1_000)
    atr_period: int = Field(default=14, ge=1, le=1_000)
    atr_ma_period: int = Field(default=20, ge=1, le=1_000)
    base_lower: float = Field(default=35.0, ge=-1_000.0, le=1_000.0)
    base_upper: float = Field(default=100.0, ge=-1_000.0, le=1_000.0)
    sensitivity: float = Field(default=0.7, gt=0.0, le=100.0)
    adjustment_factor: float = Field(default=0.3, ge=0.0, le=100.0)
    min_width: float = Field(default=10.0, ge=0.0, le=1_000.0)
    max_width: float = Field(default=50.0, ge=0.0, le=1_000.0)


class ComputedIndicators(_Response):
    """Indicator values of one candle computed with the asked parameters (null: warming up)."""

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


class MarketPnl(BaseModel):
    """The PnL of one market: realized (net of fees) and the open quantity marked to market."""

    exchange: str
    symbol: str
    quantity: float
    avg_price: float
    last_price: float | None = Field(description="the newest stored close; null: none stored")
    realized_pnl: float
    unrealized_pnl: float


class PnlSummary(BaseModel):
    """Realized and unrealized PnL over every market, and the account's equity."""

    account: str
    as_of_ms: int
    initial_equity: float | None = Field(description="null: the executor never saved its state")
    equity: float | None = Field(description="initial equity + realized + unrealized PnL")
    realized_pnl: float = Field(description="net of every fee")
    unrealized_pnl: float
    fees: float
    fills: int
    open_positions: int
    markets: list[MarketPnl]


class EquityQuery(_TimeRange):
    """Which part of the equity curve to read (the latest `limit` points by default)."""


class EquityPoint(BaseModel):
    """The account after one fill (or now, for the last point)."""

    time_ms: int
    realized_pnl: float
    unrealized_pnl: float = Field(description="open quantities marked at their last fill price")
    equity: float | None = Field(description="null: the initial equity is not known")


class Check(BaseModel):
    """One dependency /ready checked."""

    name: Literal["relay", "redis", "postgres", "stream_lag"]
    ok: bool
    detail: str


class Ready(BaseModel):
    """Readiness: Redis and Postgres answer and no consumer group lags too far behind."""

    status: Literal["ready", "not ready"]
    checks: list[Check]


class ErrorDetail(BaseModel):
    """Why a request was refused."""

    detail: str
