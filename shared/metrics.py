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
CANDLES_REVISED = Counter(
    "candlebus_candles_revised_total", "Stored candles replaced by a revision", ["source"]
)
CANDLES_LATE = Counter(
    "candlebus_candles_late_total",
    "Candles older than the market's last published one: stored, not published",
    ["source"],
)
COLLECTOR_REQUESTS = Counter(
    "candlebus_collector_requests_total", "Exchange requests", ["source", "outcome"]
)
COLLECTOR_REQUEST_SECONDS = Histogram(
    "candlebus_collector_request_seconds",
    "Exchange request latency",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
STREAM_UPDATES = Counter(
    "candlebus_collector_stream_updates_total",
    "Kline stream updates received, or failures by outcome",
    ["source", "outcome"],
)
RATE_LIMIT_WAITS = Counter(
    "candlebus_collector_rate_limit_waits_total",
    "Requests that waited for the rate limiter",
    ["source"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "candlebus_collector_rate_limit_wait_seconds_total",
    "Time requests waited for the rate limiter",
    ["source"],
)
BREAKER_STATE = Gauge(
    "candlebus_collector_breaker_state",
    "Circuit breaker per source: 0 closed, 1 half-open, 2 open",
    ["source"],
)
FALLBACK_IN_USE = Gauge(
    "candlebus_collector_fallback_in_use", "1 while a fallback source serves the exchange"
)
GAPS = Counter(
    "candlebus_collector_gaps_total",
    "Missing candle ranges: found, repaired, or settled as no-trade (empty)",
    ["outcome"],
)
MARKET_STALENESS = Gauge(
    "candlebus_collector_staleness_seconds",
    "Time since the newest stored candle of a market closed",
    ["symbol", "timeframe"],
)
TIMEFRAME_SECONDS = Gauge(
    "candlebus_collector_timeframe_seconds",
    "Length of one candle of each timeframe collected (what staleness is compared with)",
    ["timeframe"],
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
SIGNALS_SKIPPED_EVALUATIONS = Counter(
    "candlebus_signals_skipped_evaluations_total",
    "Indicator messages not evaluated: their inputs could not change a decision",
)
ORDERS = Counter("candlebus_orders_total", "Orders placed", ["side"])
ORDERS_SKIPPED = Counter(
    "candlebus_orders_skipped_total", "Signals that led to no order", ["reason"]
)
FILLS = Counter("candlebus_fills_total", "Fills recorded", ["side"])
ORDERS_REJECTED = Counter(
    "candlebus_orders_rejected_total", "Live orders the exchange refused", ["reason"]
)
ORDERS_UNSETTLED = Counter(
    "candlebus_orders_unsettled_total",
    "Live order sends that ended with the order's fate unknown (it is looked up and sent again)",
)
KILL_SWITCH = Gauge(
    "candlebus_kill_switch", "1 while the kill switch halts new entries", ["account"]
)
OPEN_POSITIONS = Gauge("candlebus_open_positions", "Markets with a non-zero position")
REALIZED_PNL = Gauge("candlebus_realized_pnl", "Realized PnL summed over markets (quote units)")
UNREALIZED_PNL = Gauge(
    "candlebus_unrealized_pnl",
    "Open holdings marked at their last close, less their cost (quote units): equity less the "
    "starting equity and the realised PnL",
)

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
WEBSOCKET_FRAMES = Counter(
    "candlebus_websocket_frames_total", "WebSocket frames sent (an events frame is a batch)"
)
WEBSOCKET_RESUMED = Counter(
    "candlebus_websocket_resumed_total",
    "Entries sent again to clients that reconnected with their last ids",
    ["stream"],
)

# --- series that exist from the start -----------------------------------------------------------
_SIDES = ("buy", "sell")
# Why an entry was refused, for the reasons an alert or a dashboard names.
_WATCHED_SKIP_REASONS = ("kill_switch", "daily_loss")


def create_known_series(service: str) -> None:
    """Create, at zero, the series whose label values `service` knows before their first event.

    A series born at its first event is missing until then: a rate over it reads "no data"
    instead of 0, and an alert on its increase misses that first event (a series that appears
    at 1 has not increased). Label values only known at run time (an exchange's name, a stream
    a group consumes) are created where they become known.
    """
    if service == "collector":
        for outcome in ("found", "repaired", "empty", "retried"):
            GAPS.labels(outcome)
    elif service == "indicators":
        MESSAGES_HANDLED.labels(service, "candles")
        MESSAGES_FAILED.labels(service, "candles", "invalid")
        DEAD_LETTERS.labels("candles", "invalid")
    elif service == "signals":
        for side in _SIDES:
            SIGNALS.labels(side)
    elif service == "executor":
        for side in _SIDES:
            ORDERS.labels(side)
            FILLS.labels(side)
        for reason in _WATCHED_SKIP_REASONS:
            ORDERS_SKIPPED.labels(reason)
    elif service == "gateway":
        WEBSOCKET_DROPPED.labels("slow_consumer")
        for result in ("hit", "miss"):  # indicators computed on demand (/indicators/computed)
            INDICATOR_CACHE.labels(result)


# --- gateway: response cache, rate limits, request limits ---------------------------------------
RESPONSE_CACHE = Counter(
    "candlebus_response_cache_total",
    "Cacheable API reads by data kind and outcome: local_hit (in process), redis_hit, "
    "coalesced (waited for an identical read in flight), miss (read the database), error "
    "(Redis failed: read the database)",
    ["kind", "result"],
)
RESPONSE_CACHE_BYTES = Gauge(
    "candlebus_response_cache_bytes", "Response bodies kept in the gateway's process"
)
HTTP_RATE_LIMITED = Counter(
    "candlebus_http_rate_limited_total",
    "Requests refused with 429, by who was limited (token or address)",
    ["client_kind"],
)
HTTP_TOO_LARGE = Counter(
    "candlebus_http_too_large_total", "Requests refused with 413: body over the limit"
)
