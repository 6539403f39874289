"""Every Prometheus metric of every service, declared once (prefix `candlebus_`, base units)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- bus and service loops -------------------------------------------------------------------
MESSAGES_HANDLED = Counter(
    "candlebus_messages_handled_total", "Stream entries handled and acked", ["service", "stream"]
)
MESSAGES_FAILED = Counter(
    "candlebus_messages_failed_total",
    "Stream entries that could not be handled",
    ["service", "stream", "reason"],
)
HANDLE_SECONDS = Histogram(
    "candlebus_handle_seconds",
    "Time to handle one batch (decode, compute, store, publish, ack)",
    ["service", "stream"],
    buckets=_LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter(
    "candlebus_dead_letters_total", "Entries moved to a dead-letter stream", ["stream", "reason"]
)
PUBLISHED = Counter("candlebus_published_total", "Entries published", ["stream"])
CONSUMER_LAG = Gauge(
    "candlebus_consumer_lag_entries", "Entries not yet delivered to a group", ["stream", "group"]
)
CONSUMER_PENDING = Gauge(
    "candlebus_consumer_pending_entries",
    "Entries delivered to a group but not acked",
    ["stream", "group"],
)
RECLAIMED = Counter(
    "candlebus_reclaimed_total", "Entries reclaimed from idle consumers", ["stream", "group"]
)
STAGE_LATENCY = Histogram(
    "candlebus_stage_latency_seconds",
    "Time from a candle's publication by the collector to a later stage's output",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)

# --- collector -------------------------------------------------------------------------------
CANDLES_STORED = Counter("candlebus_candles_stored_total", "New candles stored", ["source"])
CANDLES_PUBLISHED = Counter(
    "candlebus_candles_published_total", "Candles published as closed", ["source"]
)
CANDLES_REJECTED = Counter(
    "candlebus_candles_rejected_total", "Candles rejected by validation", ["reason"]
)

# --- indicators ------------------------------------------------------------------------------
INDICATOR_COMPUTE_SECONDS = Histogram(
    "candlebus_indicator_compute_seconds",
    "Kernel time to update indicators for one batch",
    buckets=_LATENCY_BUCKETS,
)
INDICATOR_CACHE = Counter(
    "candlebus_indicator_cache_total", "On-demand indicator cache lookups", ["result"]
)

# --- signals and executor --------------------------------------------------------------------
SIGNALS = Counter("candlebus_signals_total", "Signals emitted", ["side"])
ORDERS = Counter("candlebus_orders_total", "Orders placed", ["side"])
ORDERS_SKIPPED = Counter(
    "candlebus_orders_skipped_total", "Signals that led to no order", ["reason"]
)
FILLS = Counter("candlebus_fills_total", "Fills recorded", ["side"])
OPEN_POSITIONS = Gauge("candlebus_open_positions", "Markets with a non-zero position")
REALIZED_PNL = Gauge("candlebus_realized_pnl", "Realized PnL summed over markets (quote units)")

# --- store -----------------------------------------------------------------------------------
DB_QUERY_SECONDS = Histogram(
    "candlebus_db_query_seconds", "Database call time", ["operation"], buckets=_LATENCY_BUCKETS
)
DB_POOL_CHECKED_OUT = Gauge(
    "candlebus_db_pool_checked_out_connections", "QueuePool connections in use"
)
DB_POOL_OVERFLOW = Gauge("candlebus_db_pool_overflow_connections", "QueuePool overflow in use")

# --- gateway ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "candlebus_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "candlebus_http_request_seconds", "HTTP request time", ["route"], buckets=_LATENCY_BUCKETS
)
WEBSOCKET_CLIENTS = Gauge("candlebus_websocket_clients", "Connected WebSocket clients")
WEBSOCKET_MESSAGES = Counter(
    "candlebus_websocket_messages_total", "Messages sent to WebSocket clients", ["channel_kind"]
)
WEBSOCKET_DROPPED = Counter(
    "candlebus_websocket_dropped_total", "WebSocket clients dropped", ["reason"]
)
