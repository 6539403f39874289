"""The database schema: SQLAlchemy tables (changed only by Alembic) in, row types read back out."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

metadata = sa.MetaData()

# Epoch milliseconds never fit 32 bits; prices and quantities are double precision.
_MS = sa.BigInteger
_PRICE = sa.Float(53)

CANDLE_VALUES = ("open", "high", "low", "close", "volume")
INDICATOR_VALUES = (
    "close",
    "rsi",
    "stoch_k",
    "stoch_d",
    "stochrsi_fastk",
    "stochrsi_fastd",
    "atr",
    "volatility_ratio",
    "band_lower",
    "band_upper",
    "prev_stoch_k",
    "prev_band_lower",
    "prev_band_upper",
)


def _market_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.Column("open_time_ms", _MS, nullable=False),
    ]


def _add_latest_index(table: sa.Table, values: tuple[str, ...]) -> None:
    # Covering on Postgres (when `values` are given) so "latest N of one market" is an
    # index-only scan; the exchange is included because callers may filter on it.
    sa.Index(
        f"ix_{table.name}_symbol_timeframe_time",
        table.c.symbol,
        table.c.timeframe,
        table.c.open_time_ms.desc(),
        postgresql_include=["exchange", *values] if values else [],
    )


candles = sa.Table(
    "candles",
    metadata,
    *_market_columns(),
    *(sa.Column(name, _PRICE, nullable=False) for name in CANDLE_VALUES),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("stored_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("exchange", "symbol", "timeframe", "open_time_ms", name="pk_candles"),
)
_add_latest_index(candles, CANDLE_VALUES)

indicators = sa.Table(
    "indicators",
    metadata,
    *_market_columns(),
    # NULL stands for NaN ("still warming up"): Postgres NaN sorts and compares unlike NULL.
    *(sa.Column(name, _PRICE, nullable=True) for name in INDICATOR_VALUES),
    sa.Column("candle_closed_at_ms", _MS, nullable=False),
    sa.Column("stored_at_ms", _MS, nullable=False),
    # The one index: indicator rows are written at the full candle rate, and every index
    # costs each write about as much as the row. Market first, then time, it also serves
    # "the latest rows of a market", with or without the exchange.
    sa.PrimaryKeyConstraint(
        "symbol", "timeframe", "open_time_ms", "exchange", name="pk_indicators"
    ),
)

signals = sa.Table(
    "signals",
    metadata,
    sa.Column("signal_id", sa.Text, nullable=False),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("timeframe", sa.Text, nullable=False),
    sa.Column("open_time_ms", _MS, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("price", _PRICE, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("candle_closed_at_ms", _MS, nullable=False),
    sa.Column("stored_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("signal_id", name="pk_signals"),
    sa.UniqueConstraint(
        "strategy", "exchange", "symbol", "timeframe", "open_time_ms", name="uq_signals_market"
    ),
    sa.CheckConstraint("side IN ('buy', 'sell')", name="ck_signals_side"),
    sa.Index("ix_signals_symbol_time", "symbol", "open_time_ms"),
)

orders = sa.Table(
    "orders",
    metadata,
    # INTEGER PRIMARY KEY is what makes SQLite assign ids itself.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
    sa.Column("client_order_id", sa.Text, nullable=False),
    sa.Column("signal_id", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("order_type", sa.Text, nullable=False),
    sa.Column("quantity", _PRICE, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at_ms", _MS, nullable=False),
    sa.Column("candle_closed_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("id", name="pk_orders"),
    sa.UniqueConstraint("client_order_id", name="uq_orders_client_order_id"),
    sa.CheckConstraint("side IN ('buy', 'sell')", name="ck_orders_side"),
    sa.Index("ix_orders_symbol_created", "symbol", "created_at_ms"),
    sa.Index("ix_orders_signal_id", "signal_id"),
)

fills = sa.Table(
    "fills",
    metadata,
    sa.Column("fill_id", sa.Text, nullable=False),
    sa.Column("client_order_id", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("price", _PRICE, nullable=False),
    sa.Column("quantity", _PRICE, nullable=False),
    sa.Column("fee", _PRICE, nullable=False),
    sa.Column("filled_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("fill_id", name="pk_fills"),
    sa.ForeignKeyConstraint(
        ["client_order_id"],
        ["orders.client_order_id"],
        name="fk_fills_client_order_id_orders",
    ),
    sa.CheckConstraint("side IN ('buy', 'sell')", name="ck_fills_side"),
    sa.Index("ix_fills_symbol_filled", "symbol", "filled_at_ms"),
    # Postgres does not index foreign keys by itself; fills are looked up by their order.
    sa.Index("ix_fills_client_order_id", "client_order_id"),
)

# One row per signal the executor has seen: what it decided, so a late duplicate of a signal is
# never decided again against a newer position.
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("signal_id", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("client_order_id", sa.Text, nullable=True),
    sa.Column("decided_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("signal_id", name="pk_decisions"),
    sa.CheckConstraint("outcome IN ('ordered', 'skipped')", name="ck_decisions_outcome"),
    sa.Index("ix_decisions_symbol_decided", "symbol", "decided_at_ms"),
)

positions = sa.Table(
    "positions",
    metadata,
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("quantity", _PRICE, nullable=False),
    sa.Column("avg_price", _PRICE, nullable=False),
    sa.Column("realized_pnl", _PRICE, nullable=False),
    sa.Column("updated_at_ms", _MS, nullable=False),
    sa.Column("cause_fill_id", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("exchange", "symbol", name="pk_positions"),
)


# Missing candles the collector found between stored ones. "open": being fetched again;
# "empty": the exchange had no trade in that range (asked `attempts` times), never fetched again;
# "repaired": every candle of the range arrived.
candle_gaps = sa.Table(
    "candle_gaps",
    metadata,
    *_market_columns()[:3],
    sa.Column("first_open_ms", _MS, nullable=False),
    sa.Column("last_open_ms", _MS, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("found_at_ms", _MS, nullable=False),
    sa.Column("updated_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint(
        "exchange", "symbol", "timeframe", "first_open_ms", name="pk_candle_gaps"
    ),
    sa.CheckConstraint("state IN ('open', 'empty', 'repaired')", name="ck_candle_gaps_state"),
    sa.CheckConstraint("last_open_ms >= first_open_ms", name="ck_candle_gaps_range"),
    sa.Index("ix_candle_gaps_state", "state"),
)


# The executor's trader, whole: its snapshot (holdings with their stops, targets and trailing
# levels, pending orders, cash, cooldowns) and the last ticks entry it covers. Written in the
# same transaction as the fills and positions it explains.
trader_state = sa.Table(
    "trader_state",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("snapshot", sa.Text, nullable=False),
    sa.Column("stream_id", sa.Text, nullable=False),
    sa.Column("updated_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("account", name="pk_trader_state"),
)


# Controls a person sets by hand, read by the executor every second: the kill switch.
trading_controls = sa.Table(
    "trading_controls",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("kill_switch", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("updated_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("account", name="pk_trading_controls"),
)

# Symbols a person paused by hand: no new entries there (exits go on).
symbol_controls = sa.Table(
    "symbol_controls",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("updated_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("account", "symbol", name="pk_symbol_controls"),
)

# Requests to close a position by hand; the executor answers each once (`outcome`, in the same
# transaction as the order it placed for it).
close_requests = sa.Table(
    "close_requests",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("requested_at_ms", _MS, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=True),
    sa.Column("done_at_ms", _MS, nullable=True),
    sa.PrimaryKeyConstraint("account", "symbol", "requested_at_ms", name="pk_close_requests"),
)

# Strategy parameters set through the API (JSON), read by the signals service every second.
strategy_params = sa.Table(
    "strategy_params",
    metadata,
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("updated_at_ms", _MS, nullable=False),
    sa.PrimaryKeyConstraint("strategy", name="pk_strategy_params"),
)


@dataclass(frozen=True, slots=True)
class CandleRow:
    """One stored candle."""

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class IndicatorRow:
    """Stored indicator values of one candle; NaN where the indicator was still warming up."""

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


@dataclass(frozen=True, slots=True)
class SignalRow:
    """One stored signal."""

    signal_id: str
    strategy: str
    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    side: str
    price: float
    reason: str
    candle_closed_at_ms: int
    stored_at_ms: int


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One stored order."""

    id: int
    client_order_id: str
    signal_id: str
    exchange: str
    symbol: str
    side: str
    order_type: str
    quantity: float
    status: str
    created_at_ms: int
    candle_closed_at_ms: int


@dataclass(frozen=True, slots=True)
class FillRow:
    """One stored fill."""

    fill_id: str
    client_order_id: str
    exchange: str
    symbol: str
    side: str
    price: float
    quantity: float
    fee: float
    filled_at_ms: int


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """What the executor decided for one signal: an order, or a skip with its reason."""

    signal_id: str
    exchange: str
    symbol: str
    side: str
    outcome: str
    reason: str
    client_order_id: str | None
    decided_at_ms: int


@dataclass(frozen=True, slots=True)
class PositionRow:
    """The stored position in one market."""

    exchange: str
    symbol: str
    quantity: float
    avg_price: float
    realized_pnl: float
    updated_at_ms: int
    cause_fill_id: str


@dataclass(frozen=True, slots=True)
class GapRow:
    """A range of missing candles of one market, both ends inclusive, and what became of it."""

    exchange: str
    symbol: str
    timeframe: str
    first_open_ms: int
    last_open_ms: int
    state: str
    attempts: int
    found_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class TraderStateRow:
    """A trader's saved snapshot (JSON) and the last ticks entry it covers."""

    account: str
    snapshot: str
    stream_id: str
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class ControlsRow:
    """The hand-set controls of one account."""

    account: str
    kill_switch: bool
    reason: str
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class SymbolControlRow:
    """A symbol paused (or resumed) by hand."""

    account: str
    symbol: str
    paused: bool
    reason: str
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class CloseRequestRow:
    """A request to close a position by hand; `outcome` is None until the executor answers
    (`ordered`, or why not: `no_position`, `pending_order`)."""

    account: str
    symbol: str
    requested_at_ms: int
    reason: str
    outcome: str | None = None
    done_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class StrategyParamsRow:
    """A strategy's parameters as set through the API (a JSON object)."""

    strategy: str
    params: str
    reason: str
    updated_at_ms: int
