"""The wire schema: stream names, frozen message types, and their msgpack encoding.

Every message on the bus is one of the types below. Each stream carries exactly one type, so a
reader decodes with the type its stream names. Timestamps are UTC epoch milliseconds. Everything
that can lead to an order carries a stable id that later stages use as their idempotency key:
`SignalEmitted.signal_id` -> `OrderPlaced.client_order_id` -> `OrderFilled.fill_id`.
"""

from __future__ import annotations

import enum
import hashlib
import math
from typing import Final, Literal, TypeAlias

import msgspec

SCHEMA_VERSION: Final = 1

TIMEFRAME_MS: Final[dict[str, int]] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}

Side: TypeAlias = Literal["buy", "sell"]


class Stream(enum.StrEnum):
    """Stream names: lower-case plural nouns."""

    CANDLES = "candles"
    INDICATORS = "indicators"
    SIGNALS = "signals"
    ORDERS = "orders"
    FILLS = "fills"
    POSITIONS = "positions"
    TICKS = "ticks"

    @property
    def dead_letter(self) -> str:
        """Name of the stream that receives this stream's poison entries."""
        return f"{self.value}.dead"


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False, gc=False):
    """Base of every wire message: carries the schema version and a partition key."""

    v: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Partition key: the market the message is about (or the stream's single key)."""
        raise NotImplementedError


class CandleClosed(Message, frozen=True, kw_only=True):
    """A closed OHLCV candle, validated and stored by the collector."""

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    source: str
    closed_at_ms: int  # when the collector published it: start of end-to-end latency

    @property
    def key(self) -> str:
        return market_key(self.exchange, self.symbol, self.timeframe)


class IndicatorsComputed(Message, frozen=True, kw_only=True):
    """Indicator values for one closed candle. NaN means "still warming up".

    The `prev_*` fields are the values one candle earlier, so a crossing rule needs no state
    of its own and gives the same answer after any restart.
    """

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    close: float
    rsi: float
    stoch_k: float
    stoch_d: float
    stochrsi_fastk: float
    stochrsi_fastd: float
    atr: float
    volatility_ratio: float
    band_lower: float
    band_upper: float
    prev_stoch_k: float
    prev_band_lower: float
    prev_band_upper: float
    candle_closed_at_ms: int
    # The candle's other prices, for consumers that trade on it (NaN from older producers;
    # stored rows keep the close only).
    open: float = math.nan
    high: float = math.nan
    low: float = math.nan

    @property
    def key(self) -> str:
        return market_key(self.exchange, self.symbol, self.timeframe)


class SignalEmitted(Message, frozen=True, kw_only=True):
    """A strategy's decision to buy or sell, keyed by a stable `signal_id`."""

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

    @property
    def key(self) -> str:
        return market_key(self.exchange, self.symbol, self.timeframe)


class OrderPlaced(Message, frozen=True, kw_only=True):
    """An order the executor placed for a signal; `client_order_id` derives from the signal id."""

    client_order_id: str
    signal_id: str
    exchange: str
    symbol: str
    side: Side
    order_type: Literal["market"] = "market"
    quantity: float
    created_at_ms: int
    candle_closed_at_ms: int

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


class OrderFilled(Message, frozen=True, kw_only=True):
    """A (paper or live) fill of an order."""

    fill_id: str
    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    price: float
    quantity: float
    fee: float
    filled_at_ms: int

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


class PositionChanged(Message, frozen=True, kw_only=True):
    """The position in one market after a fill."""

    exchange: str
    symbol: str
    quantity: float
    avg_price: float
    realized_pnl: float
    updated_at_ms: int
    cause_fill_id: str

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


class Tick(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One candle as the strategy saw it: its prices, its ATR, and its signal if it made one
    (`side` and `signal_id` empty otherwise)."""

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    atr: float
    side: str
    signal_id: str
    candle_closed_at_ms: int

    @property
    def key(self) -> str:
        return market_key(self.exchange, self.symbol, self.timeframe)


class TicksDecided(Message, frozen=True, kw_only=True):
    """Every candle of one batch of the signals service, in order, with its signals: the one
    ordered input a trader needs (fills at the next candle's open, exits on every candle)."""

    ticks: list[Tick]

    @property
    def key(self) -> str:
        return self.ticks[-1].key if self.ticks else ""


AnyMessage: TypeAlias = (
    CandleClosed
    | IndicatorsComputed
    | SignalEmitted
    | OrderPlaced
    | OrderFilled
    | PositionChanged
    | TicksDecided
)

STREAM_TYPES: Final[dict[Stream, type[Message]]] = {
    Stream.CANDLES: CandleClosed,
    Stream.INDICATORS: IndicatorsComputed,
    Stream.SIGNALS: SignalEmitted,
    Stream.ORDERS: OrderPlaced,
    Stream.FILLS: OrderFilled,
    Stream.POSITIONS: PositionChanged,
    Stream.TICKS: TicksDecided,
}


class DecodeError(ValueError):
    """Raised when bytes on a stream are not a valid message of that stream's type."""


_encoder = msgspec.msgpack.Encoder()
_decoders = {stream: msgspec.msgpack.Decoder(kind) for stream, kind in STREAM_TYPES.items()}
_json_encoder = msgspec.json.Encoder()


def market_key(exchange: str, symbol: str, timeframe: str) -> str:
    """Return the partition key of one market's candle series."""
    return f"{exchange}:{symbol}:{timeframe}"


def encode(message: Message) -> bytes:
    """Encode a message as compact msgpack."""
    return _encoder.encode(message)


def decode(stream: Stream, data: bytes) -> Message:
    """Decode bytes read from `stream`, raising DecodeError with the reason if they are invalid."""
    try:
        message: Message = _decoders[stream].decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"not a {STREAM_TYPES[stream].__name__}: {exc}") from exc
    if message.v > SCHEMA_VERSION:
        raise DecodeError(f"schema version {message.v} is newer than {SCHEMA_VERSION}")
    return message


def to_json(message: Message) -> bytes:
    """Encode a message as JSON for WebSocket clients (NaN becomes null)."""
    return _json_encoder.encode(message)


def to_builtins(message: Message) -> dict[str, object]:
    """Return the message as a plain dict (NaN replaced by None, for JSON APIs)."""
    out: dict[str, object] = msgspec.to_builtins(message)
    for name, value in out.items():
        if isinstance(value, float) and math.isnan(value):
            out[name] = None
    return out


def signal_id(strategy: str, exchange: str, symbol: str, timeframe: str, open_time_ms: int) -> str:
    """Return the stable id of a strategy's signal on one candle."""
    return f"{strategy}:{exchange}:{symbol}:{timeframe}:{open_time_ms}"


def client_order_id(signal: str) -> str:
    """Return the client order id of the one order a signal may lead to.

    Exchanges limit client ids (Binance: 36 characters of [.A-Z:/a-z0-9_-]), so the id is a
    digest of the signal id, stable across processes and restarts.
    """
    return "cb-" + hashlib.blake2b(signal.encode(), digest_size=16).hexdigest()
