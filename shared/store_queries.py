"""Blocking query functions: a SQLAlchemy Connection and wire messages in, rows or messages out."""

from __future__ import annotations

import io
import math
import operator
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeAlias, cast

import msgspec
import numpy as np
import psycopg2.errors
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from shared.messages import (
    CandleClosed,
    IndicatorsComputed,
    OrderFilled,
    OrderPlaced,
    PositionChanged,
    SignalEmitted,
)
from shared.store_schema import (
    CandleRow,
    CloseRequestRow,
    ControlsRow,
    DecisionRow,
    FillRow,
    GapRow,
    IndicatorRow,
    OrderRow,
    PositionRow,
    StrategyParamsRow,
    SymbolControlRow,
    TraderStateRow,
    candle_gaps,
    candles,
    close_requests,
    decisions,
    fills,
    indicators,
    orders,
    positions,
    signals,
    strategy_params,
    symbol_controls,
    trader_state,
    trading_controls,
)

Market: TypeAlias = tuple[str, str, str]
Side: TypeAlias = Literal["buy", "sell"]

# From this many rows on, COPY into a temporary table beats batched multi-row INSERTs despite its
# fixed cost (CREATE, then INSERT ... SELECT). Median times on Postgres 15, candle rows, INSERT vs
# COPY: 10 rows 1.5 vs 2.3 ms, 40 rows 2.5 vs 2.5 ms, 100 rows 5.6 vs 3.8 ms, 1000 rows 46 vs 16 ms.
COPY_MIN_ROWS = 40

# SQLite refuses a compound SELECT of more than 500 parts.
_SQLITE_MARKETS_PER_QUERY = 400


def insert_candles(conn: Connection, batch: Sequence[CandleClosed], *, stored_at_ms: int) -> int:
    """Insert the candles not stored yet; return how many."""
    return insert_new(conn, candles, _tuples(batch, candles, stored_at_ms=stored_at_ms))


def insert_indicators(
    conn: Connection, batch: Sequence[IndicatorsComputed], *, stored_at_ms: int
) -> int:
    """Insert the indicator rows not stored yet (NaN stored as NULL); return how many."""
    return insert_new(conn, indicators, _tuples(batch, indicators, stored_at_ms=stored_at_ms))


def insert_signals(conn: Connection, batch: Sequence[SignalEmitted], *, stored_at_ms: int) -> int:
    """Insert the signals not stored yet; return how many."""
    return insert_new(conn, signals, _tuples(batch, signals, stored_at_ms=stored_at_ms))


def upsert_candles(
    conn: Connection, batch: Sequence[CandleClosed], *, stored_at_ms: int
) -> tuple[int, int]:
    """Store candles: new ones inserted, stored ones whose values differ replaced (a revision
    by the exchange), identical ones left alone; return (inserted, revised).

    A key repeated in the batch keeps its last candle.
    """
    names, values = _tuples(batch, candles, stored_at_ms=stored_at_ms)
    key = operator.itemgetter(*(names.index(c.name) for c in candles.primary_key.columns))
    unique = list({key(row): row for row in values}.values())
    if not unique:
        return 0, 0
    if conn.dialect.name == "postgresql":
        return _upsert_candles_postgres(conn, names, unique)
    return _upsert_candles_portable(conn, names, unique, key)


def _upsert_candles_postgres(
    conn: Connection, names: list[str], rows: list[tuple[Any, ...]]
) -> tuple[int, int]:
    """COPY into staging, then one INSERT ... ON CONFLICT DO UPDATE that touches only rows whose
    values changed; `xmax = 0` tells an inserted row from an updated one."""
    staging = _copy_to_staging(conn, candles, names, rows)
    replaced = [name for name in names if name not in {c.name for c in candles.primary_key}]
    stored = ", ".join(f"candles.{name}" for name in CANDLE_COLUMNS)
    incoming = ", ".join(f"EXCLUDED.{name}" for name in CANDLE_COLUMNS)
    result = conn.exec_driver_sql(
        f"INSERT INTO candles ({', '.join(names)}) SELECT {', '.join(names)} FROM {staging} "
        "ON CONFLICT (exchange, symbol, timeframe, open_time_ms) DO UPDATE SET "
        + ", ".join(f"{name} = EXCLUDED.{name}" for name in replaced)
        + f" WHERE ({stored}) IS DISTINCT FROM ({incoming}) RETURNING (xmax = 0)"
    )
    flags = [bool(inserted) for (inserted,) in result]
    inserted = sum(flags)
    return inserted, len(flags) - inserted


def _upsert_candles_portable(
    conn: Connection, names: list[str], rows: list[tuple[Any, ...]], key: Any
) -> tuple[int, int]:
    """Read the stored candles of the batch's keys, then insert the new and update the changed."""
    position = {name: i for i, name in enumerate(names)}
    stored: dict[Any, tuple[float, ...]] = {}
    by_market: dict[Market, list[int]] = {}
    for row in rows:
        market = (row[position["exchange"]], row[position["symbol"]], row[position["timeframe"]])
        by_market.setdefault(market, []).append(row[position["open_time_ms"]])
    for (exchange, symbol, timeframe), times in by_market.items():
        query = sa.select(*(candles.c[name] for name in (*_KEY_COLUMNS, *CANDLE_COLUMNS))).where(
            candles.c.exchange == exchange,
            candles.c.symbol == symbol,
            candles.c.timeframe == timeframe,
            candles.c.open_time_ms.between(min(times), max(times)),
        )
        for found in conn.execute(query):
            stored[tuple(found[:4])] = tuple(found[4:])
    fresh = [row for row in rows if key(row) not in stored]
    changed = [
        row
        for row in rows
        if key(row) in stored
        and stored[key(row)] != tuple(row[position[name]] for name in CANDLE_COLUMNS)
    ]
    if fresh:
        conn.execute(
            sqlite.insert(candles).on_conflict_do_nothing(),
            [dict(zip(names, row, strict=True)) for row in fresh],
        )
    for row in changed:
        values = dict(zip(names, row, strict=True))
        conn.execute(
            candles.update()
            .where(*(candles.c[name] == values[name] for name in _KEY_COLUMNS))
            .values({name: values[name] for name in names if name not in _KEY_COLUMNS})
        )
    return len(fresh), len(changed)


_KEY_COLUMNS = ("exchange", "symbol", "timeframe", "open_time_ms")
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume")


def save_gaps(conn: Connection, gaps: Sequence[GapRow]) -> None:
    """Insert or overwrite gap records (keyed by market and first missing open time)."""
    if not gaps:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    rows = [{f.name: getattr(gap, f.name) for f in fields(GapRow)} for gap in gaps]
    statement = dialect.insert(candle_gaps)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[c.name for c in candle_gaps.primary_key.columns],
            set_={
                name: statement.excluded[name]
                for name in ("last_open_ms", "state", "attempts", "updated_at_ms")
            },
        ),
        rows,
    )


def select_gaps(conn: Connection, *, states: Sequence[str]) -> list[GapRow]:
    """Return the gap records in these states, oldest first."""
    query = (
        sa.select(candle_gaps)
        .where(candle_gaps.c.state.in_(list(states)))
        .order_by(candle_gaps.c.first_open_ms, candle_gaps.c.symbol)
    )
    return [GapRow(**row._mapping) for row in conn.execute(query)]


Rows: TypeAlias = tuple[list[str], list[tuple[Any, ...]]]  # column names, one tuple per row


def insert_new(conn: Connection, table: sa.Table, rows: Rows) -> int:
    """Insert rows whose primary key is not stored yet (first of a repeated key wins).

    NaN in a nullable float column is stored as NULL ("still warming up").
    """
    names, values = rows
    key = operator.itemgetter(*(names.index(c.name) for c in table.primary_key.columns))
    unique: dict[Any, tuple[Any, ...]] = {}
    for row in values:
        unique.setdefault(key(row), row)
    # In key order, each index takes its new entries page by page: a fifth less time in
    # Postgres for a batch that interleaves many markets.
    batch = [unique[k] for k in sorted(unique)]
    if not batch:
        return 0
    if conn.dialect.name == "postgresql" and len(batch) >= COPY_MIN_ROWS:
        return _copy_new(conn, table, names, batch)
    nullable = [i for i, name in enumerate(names) if table.c[name].nullable]
    dicts = [
        {
            name: None if i in nullable and _is_nan(v) else v
            for i, (name, v) in enumerate(zip(names, row, strict=True))
        }
        for row in batch
    ]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # With RETURNING, SQLAlchemy sends the rows as a few multi-row INSERTs ("insertmanyvalues")
    # instead of one statement per row, and only the rows actually inserted come back.
    statement = dialect.insert(table).on_conflict_do_nothing()
    inserted = conn.execute(statement.returning(*table.primary_key.columns), dicts)
    return len(inserted.all())


def _copy_new(
    conn: Connection, table: sa.Table, names: list[str], rows: list[tuple[Any, ...]]
) -> int:
    """Insert the rows whose key is not stored yet, by COPY.

    Usually none is stored yet: the rows are copied straight into the table, which costs
    Postgres about half of a copy into staging and an insert from there. If one is stored
    already (a redelivered batch), that copy is rolled back to its savepoint, and the rows go
    through a per-session staging table, from which one statement inserts the new ones.
    """
    binary = _copy_binary(table, names, rows, nan_as_null=True)
    if binary is not None:
        savepoint = conn.begin_nested()
        try:
            _copy_in(conn, table.name, names, binary)
        except psycopg2.errors.UniqueViolation:
            savepoint.rollback()
        else:
            savepoint.commit()
            return len(rows)
    staging = _copy_to_staging(conn, table, names, rows)
    # COPY reads NaN as a float NaN: NULLIF turns it into NULL, which stands for NaN here.
    selected = ", ".join(
        f"NULLIF({name}, 'NaN'::float8)"
        if table.c[name].nullable and isinstance(table.c[name].type, sa.Float)
        else name
        for name in names
    )
    result = conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {selected} FROM {staging} "
        "ON CONFLICT DO NOTHING"
    )
    return result.rowcount


def _copy_to_staging(
    conn: Connection, table: sa.Table, names: list[str], rows: list[tuple[Any, ...]]
) -> str:
    """COPY rows into the table's per-session staging table (emptied by every commit); return
    its name."""
    staging = f"{table.name}_incoming"
    # Created once per pooled connection; emptied by every commit.
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} "
        f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    binary = _copy_binary(table, names, rows)
    if binary is not None:
        _copy_in(conn, staging, names, binary)
    else:
        cursor: Any = conn.connection.cursor()
        try:
            statement = f"COPY {staging} ({', '.join(names)}) FROM STDIN"
            cursor.copy_expert(statement, io.StringIO(_copy_text(rows)))
        finally:
            cursor.close()
    return staging


def _copy_in(conn: Connection, table_name: str, names: list[str], binary: bytes) -> None:
    """COPY rows rendered by `_copy_binary` into a table."""
    cursor: Any = conn.connection.cursor()
    try:
        cursor.copy_expert(
            f"COPY {table_name} ({', '.join(names)}) FROM STDIN WITH (FORMAT binary)",
            io.BytesIO(binary),
        )
    finally:
        cursor.close()


_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_BINARY_TRAILER = struct.pack(">h", -1)


def _binary_kind(column: sa.Column[Any]) -> str | None:
    """Return the big-endian numpy type of a column in COPY's binary format ("text" for text)."""
    kind = column.type
    if isinstance(kind, sa.Float):
        return ">f8"
    if isinstance(kind, sa.BigInteger):
        return ">i8"
    if isinstance(kind, sa.Integer):
        return ">i4"
    if isinstance(kind, sa.String):
        return "text"
    return None


def _copy_binary(
    table: sa.Table, names: list[str], rows: list[tuple[Any, ...]], *, nan_as_null: bool = False
) -> bytes | None:
    """Render rows in COPY's binary format with numpy, or None where only text COPY fits.

    A row is (int16 field count, then per field an int32 length and the big-endian value, or
    the length -1 alone for NULL). Rows are grouped by the lengths of their text fields (and,
    with `nan_as_null`, by which nullable floats are NaN, written as NULL) so each group is one
    fixed-size numpy record array: about 3 µs a row against 12 µs for text, which is most of a
    batch's cost.
    """
    found = [_binary_kind(table.c[name]) for name in names]
    kinds = [kind for kind in found if kind is not None]
    if len(kinds) != len(found):
        return None
    columns = list(zip(*rows, strict=True))
    texts: dict[int, list[bytes]] = {}
    for j, kind in enumerate(kinds):
        if kind == "text":
            if not all(isinstance(value, str) for value in columns[j]):
                return None  # NULL text: the text path writes \N
            texts[j] = [value.encode() for value in columns[j]]
    try:
        numbers = {
            j: np.asarray(columns[j], dtype=kind) for j, kind in enumerate(kinds) if j not in texts
        }
    except (TypeError, ValueError):
        return None  # a NULL number
    nullable = [
        j
        for j, name in enumerate(names)
        if nan_as_null and kinds[j] == ">f8" and table.c[name].nullable
    ]
    shapes = [
        *(map(len, texts[j]) for j in texts),
        *(np.isnan(numbers[j]).tolist() for j in nullable),
    ]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, shape in enumerate(zip(*shapes, strict=True)):
        groups.setdefault(shape, []).append(i)
    parts = [_BINARY_HEADER]
    for shape, members in groups.items():
        width = dict(zip(texts, shape, strict=False))
        null = {j for j, is_nan in zip(nullable, shape[len(texts) :], strict=True) if is_nan}
        layout: list[tuple[str, str]] = [("fields", ">i2")]
        for j, kind in enumerate(kinds):
            layout.append((f"l{j}", ">i4"))
            if j not in null:
                layout.append((f"v{j}", f"S{width[j]}" if j in texts else kind))
        records = np.empty(len(members), dtype=layout)
        index = np.asarray(members)
        records["fields"] = len(kinds)
        for j in range(len(kinds)):
            if j in null:
                records[f"l{j}"] = -1
            elif j in texts:
                records[f"l{j}"] = width[j]
                if width[j]:
                    records[f"v{j}"] = np.asarray(texts[j], dtype=object)[index].astype(
                        f"S{width[j]}"
                    )
            else:
                records[f"l{j}"] = np.dtype(kinds[j]).itemsize
                records[f"v{j}"] = numbers[j][index]
        parts.append(records.tobytes())
    parts.append(_BINARY_TRAILER)
    return b"".join(parts)


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_text(rows: list[tuple[Any, ...]]) -> str:
    """Render rows in COPY's text format: str() of a float is its exact shortest repr."""
    if _has_special_text(rows):
        return "".join("\t".join(map(_copy_field, row)) + "\n" for row in rows)
    return "\n".join(["\t".join(map(str, row)) for row in rows]) + "\n"


def _has_special_text(rows: list[tuple[Any, ...]]) -> bool:
    texts = [i for i, value in enumerate(rows[0]) if isinstance(value, str) or value is None]
    return any(
        row[i] is None or _COPY_SPECIAL.search(row[i]) is not None for row in rows for i in texts
    )


def _copy_field(value: object) -> str:
    """Render one value in COPY's text format, escaping what the format reserves."""
    if value is None:
        return "\\N"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if isinstance(value, str):
        text = (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


def last_times(conn: Connection, table: sa.Table) -> dict[Market, int]:
    """Return the newest open time stored for each (exchange, symbol, timeframe)."""
    statement = sa.select(
        table.c.exchange, table.c.symbol, table.c.timeframe, sa.func.max(table.c.open_time_ms)
    ).group_by(table.c.exchange, table.c.symbol, table.c.timeframe)
    return {(e, s, t): int(ms) for e, s, t, ms in conn.execute(statement)}


def select_between(
    conn: Connection,
    table: sa.Table,
    *,
    row_type: type[Any],
    time_column: str,
    conditions: Iterable[sa.ColumnElement[bool]],
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    tie_breaker: str | None = None,
) -> list[Any]:
    """Return up to `limit` rows ascending by time: the first from `start_ms`, else the latest."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    time = table.c[time_column]
    where = list(conditions)
    if start_ms is not None:
        where.append(time >= start_ms)
    if end_ms is not None:
        where.append(time <= end_ms)
    columns = _columns(table, row_type)
    order = [time] if tie_breaker is None else [time, table.c[tie_breaker]]
    statement = sa.select(*columns).where(*where).limit(limit)
    if start_ms is not None:
        return [_row(row_type, row) for row in conn.execute(statement.order_by(*order))]
    # Newest first so the (symbol, timeframe, open_time_ms DESC) index stops after `limit` rows.
    latest = conn.execute(statement.order_by(*(column.desc() for column in order))).all()
    return [_row(row_type, row) for row in reversed(latest)]


def market_conditions(
    table: sa.Table, *, exchange: str | None, symbol: str, timeframe: str
) -> list[sa.ColumnElement[bool]]:
    """Return the WHERE terms selecting one market (every exchange when `exchange` is None)."""
    where = [table.c.symbol == symbol, table.c.timeframe == timeframe]
    if exchange is not None:
        where.append(table.c.exchange == exchange)
    return where


def symbol_conditions(table: sa.Table, symbol: str | None) -> list[sa.ColumnElement[bool]]:
    """Return the WHERE terms selecting one symbol, or none for every symbol."""
    return [] if symbol is None else [table.c.symbol == symbol]


def select_history(
    conn: Connection,
    *,
    markets: Sequence[Market],
    end_ms: Mapping[Market, int] | None,
    limit: int,
) -> dict[Market, list[CandleRow]]:
    """Return the last `limit` candles at or before each market's end, ascending, per market."""
    history: dict[Market, list[CandleRow]] = {market: [] for market in markets}
    unique = list(history)
    step = len(unique) if conn.dialect.name == "postgresql" else _SQLITE_MARKETS_PER_QUERY
    columns = _columns(candles, CandleRow)
    for first in range(0, len(unique), max(step, 1)):
        # One UNION ALL of per-market "ORDER BY time DESC LIMIT n" parts: each part is an index
        # range scan that stops after n rows, like a LATERAL join, and SQLite runs it too.
        parts = []
        for market in unique[first : first + step]:
            exchange, symbol, timeframe = market
            where = market_conditions(
                candles, exchange=exchange, symbol=symbol, timeframe=timeframe
            )
            end = None if end_ms is None else end_ms.get(market)
            if end is not None:
                where.append(candles.c.open_time_ms <= end)
            tail = sa.select(*columns).where(*where)
            tail = tail.order_by(candles.c.open_time_ms.desc()).limit(limit)
            parts.append(sa.select(tail.subquery()))
        statement = parts[0] if len(parts) == 1 else sa.union_all(*parts)
        for row in conn.execute(statement):
            candle = CandleRow(*row)
            history[(candle.exchange, candle.symbol, candle.timeframe)].append(candle)
    for rows in history.values():
        rows.sort(key=lambda candle: candle.open_time_ms)
    return history


def select_indicators(
    conn: Connection, *, candles: Sequence[tuple[str, str, str, int]]
) -> list[IndicatorsComputed]:
    """Return the stored indicators of (exchange, symbol, timeframe, open time) candles, in one
    query per chunk, as wire messages with NaN restored, oldest first."""
    key = sa.tuple_(
        indicators.c.exchange,
        indicators.c.symbol,
        indicators.c.timeframe,
        indicators.c.open_time_ms,
    )
    found: list[IndicatorsComputed] = []
    for start in range(0, len(candles), _SQLITE_MARKETS_PER_QUERY):
        chunk = list(candles[start : start + _SQLITE_MARKETS_PER_QUERY])
        statement = (
            sa.select(*_columns(indicators, IndicatorRow))
            .where(key.in_(chunk))
            .order_by(indicators.c.open_time_ms)
        )
        for row in conn.execute(statement):
            values = _row(IndicatorRow, row)
            found.append(
                IndicatorsComputed(
                    **{field.name: getattr(values, field.name) for field in fields(values)}
                )
            )
    return found


def insert_execution(
    conn: Connection, *, order: OrderPlaced, fill: OrderFilled, position: PositionChanged
) -> bool:
    """Insert an order with its fill and upsert the position, unless the order exists already."""
    if fill.client_order_id != order.client_order_id:
        raise ValueError(f"fill {fill.fill_id} is not of order {order.client_order_id}")
    if (position.exchange, position.symbol) != (order.exchange, order.symbol):
        raise ValueError(f"position {position.exchange}:{position.symbol} is not the order's")
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    status = "filled" if fill.quantity >= order.quantity else "partially_filled"
    placed = dialect.insert(orders).values(_values(order, orders, status=status))
    # The unique client order id makes a replayed execution write nothing at all.
    if conn.execute(placed.on_conflict_do_nothing()).rowcount == 0:
        return False
    decided = {
        "signal_id": order.signal_id,
        "exchange": order.exchange,
        "symbol": order.symbol,
        "side": order.side,
        "outcome": "ordered",
        "reason": "",
        "client_order_id": order.client_order_id,
        "decided_at_ms": order.created_at_ms,
    }
    conn.execute(sa.insert(decisions).values(decided))
    conn.execute(sa.insert(fills).values(_values(fill, fills)))
    upsert = dialect.insert(positions).values(_values(position, positions))
    changed = [column.name for column in positions.columns if not column.primary_key]
    conn.execute(
        upsert.on_conflict_do_update(
            index_elements=list(positions.primary_key.columns),
            set_={name: upsert.excluded[name] for name in changed},
        )
    )
    return True


@dataclass(frozen=True, slots=True)
class TradingStep:
    """What one executor batch changed, written in one transaction: new orders, new statuses of
    earlier ones, fills, positions, decisions on signals, and the trader's snapshot."""

    orders: Sequence[tuple[OrderPlaced, str]]  # new orders, with their status
    fills: Sequence[OrderFilled]
    positions: Sequence[PositionChanged]
    decisions: Sequence[DecisionRow]
    state: TraderStateRow | None
    statuses: Sequence[tuple[str, str]] = ()  # (client order id, status) of earlier orders
    answered: Sequence[CloseRequestRow] = ()  # close requests answered (outcome set)


def save_trading_step(conn: Connection, *, step: TradingStep) -> None:
    """Write a trading step; replaying it writes nothing new (every row is keyed)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for order, status in step.orders:
        placed = dialect.insert(orders).values(_values(order, orders, status=status))
        conn.execute(
            placed.on_conflict_do_update(
                index_elements=["client_order_id"], set_={"status": placed.excluded.status}
            )
        )
    for cid, status in step.statuses:
        conn.execute(orders.update().where(orders.c.client_order_id == cid).values(status=status))
    if step.fills:
        conn.execute(
            dialect.insert(fills).on_conflict_do_nothing(),
            [_values(fill, fills) for fill in step.fills],
        )
    changed = [column.name for column in positions.columns if not column.primary_key]
    for position in step.positions:
        upsert = dialect.insert(positions).values(_values(position, positions))
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=list(positions.primary_key.columns),
                set_={name: upsert.excluded[name] for name in changed},
            )
        )
    if step.decisions:
        conn.execute(
            dialect.insert(decisions).on_conflict_do_nothing(),
            [{f.name: getattr(d, f.name) for f in fields(DecisionRow)} for d in step.decisions],
        )
    for request in step.answered:
        key = close_requests.c
        conn.execute(
            close_requests.update()
            .where(
                (key.account == request.account)
                & (key.symbol == request.symbol)
                & (key.requested_at_ms == request.requested_at_ms)
            )
            .values(outcome=request.outcome, done_at_ms=request.done_at_ms)
        )
    if step.state is not None:
        row = {f.name: getattr(step.state, f.name) for f in fields(TraderStateRow)}
        upsert = dialect.insert(trader_state).values(row)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["account"],
                set_={k: upsert.excluded[k] for k in ("snapshot", "stream_id", "updated_at_ms")},
            )
        )


def select_trader_state(conn: Connection, *, account: str) -> TraderStateRow | None:
    """Return a trader's saved snapshot, if any."""
    row = conn.execute(sa.select(trader_state).where(trader_state.c.account == account)).first()
    return None if row is None else TraderStateRow(**row._mapping)


def upsert_controls(conn: Connection, *, controls: ControlsRow) -> None:
    """Set an account's hand-set controls."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    row = {f.name: getattr(controls, f.name) for f in fields(ControlsRow)}
    upsert = dialect.insert(trading_controls).values(row)
    conn.execute(
        upsert.on_conflict_do_update(
            index_elements=["account"],
            set_={k: upsert.excluded[k] for k in ("kill_switch", "reason", "updated_at_ms")},
        )
    )


def select_controls(conn: Connection, *, account: str) -> ControlsRow | None:
    """Return an account's hand-set controls, if any were ever set."""
    query = sa.select(trading_controls).where(trading_controls.c.account == account)
    row = conn.execute(query).first()
    return None if row is None else ControlsRow(**row._mapping)


def upsert_symbol_control(conn: Connection, *, control: SymbolControlRow) -> None:
    """Pause or resume a symbol by hand."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(symbol_controls).values(
        {f.name: getattr(control, f.name) for f in fields(SymbolControlRow)}
    )
    conn.execute(
        upsert.on_conflict_do_update(
            index_elements=["account", "symbol"],
            set_={k: upsert.excluded[k] for k in ("paused", "reason", "updated_at_ms")},
        )
    )


def select_paused(conn: Connection, *, account: str) -> list[SymbolControlRow]:
    """Return the symbols of an account paused by hand, by symbol."""
    c = symbol_controls.c
    query = sa.select(symbol_controls).where((c.account == account) & c.paused).order_by(c.symbol)
    return [SymbolControlRow(**row._mapping) for row in conn.execute(query)]


def insert_close_request(conn: Connection, *, request: CloseRequestRow) -> bool:
    """Record a request to close a position; False if the same one exists already."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    row = {f.name: getattr(request, f.name) for f in fields(CloseRequestRow)}
    result = conn.execute(dialect.insert(close_requests).values(row).on_conflict_do_nothing())
    return bool(result.rowcount)


def select_close_requests(
    conn: Connection, *, account: str, open_only: bool, limit: int = 100
) -> list[CloseRequestRow]:
    """Return an account's close requests, oldest first (only those not yet answered)."""
    c = close_requests.c
    query = sa.select(close_requests).where(c.account == account)
    if open_only:
        query = query.where(c.outcome.is_(None))
    query = query.order_by(c.requested_at_ms, c.symbol).limit(limit)
    return [CloseRequestRow(**row._mapping) for row in conn.execute(query)]


def upsert_strategy_params(conn: Connection, *, row: StrategyParamsRow) -> None:
    """Set a strategy's parameters."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(strategy_params).values(
        {f.name: getattr(row, f.name) for f in fields(StrategyParamsRow)}
    )
    conn.execute(
        upsert.on_conflict_do_update(
            index_elements=["strategy"],
            set_={k: upsert.excluded[k] for k in ("params", "reason", "updated_at_ms")},
        )
    )


def select_strategy_params(conn: Connection, *, strategy: str) -> StrategyParamsRow | None:
    """Return a strategy's parameters as set through the API, if ever."""
    query = sa.select(strategy_params).where(strategy_params.c.strategy == strategy)
    row = conn.execute(query).first()
    return None if row is None else StrategyParamsRow(**row._mapping)


def insert_skip(
    conn: Connection, *, signal: SignalEmitted, reason: str, decided_at_ms: int
) -> bool:
    """Record that a signal led to no order, and why; False if it was decided before."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    skipped = dialect.insert(decisions).values(
        signal_id=signal.signal_id,
        exchange=signal.exchange,
        symbol=signal.symbol,
        side=signal.side,
        outcome="skipped",
        reason=reason,
        client_order_id=None,
        decided_at_ms=decided_at_ms,
    )
    return bool(conn.execute(skipped.on_conflict_do_nothing()).rowcount)


def select_decision(conn: Connection, signal_id: str) -> DecisionRow | None:
    """Return what was decided for a signal, if it was seen before."""
    found = conn.execute(
        sa.select(*_columns(decisions, DecisionRow)).where(decisions.c.signal_id == signal_id)
    ).first()
    return None if found is None else cast(DecisionRow, _row(DecisionRow, found))


def select_order_of_signal(
    conn: Connection, signal_id: str
) -> tuple[OrderPlaced, list[OrderFilled]] | None:
    """Return the order placed for a signal and its fills (oldest first) as wire messages."""
    found = conn.execute(
        sa.select(*_columns(orders, OrderRow))
        .where(orders.c.signal_id == signal_id)
        .order_by(orders.c.id)
    ).first()
    if found is None:
        return None
    row: OrderRow = _row(OrderRow, found)
    order = OrderPlaced(
        client_order_id=row.client_order_id,
        signal_id=row.signal_id,
        exchange=row.exchange,
        symbol=row.symbol,
        side=cast(Side, row.side),
        order_type=cast(Literal["market"], row.order_type),
        quantity=row.quantity,
        created_at_ms=row.created_at_ms,
        candle_closed_at_ms=row.candle_closed_at_ms,
    )
    fill_rows = conn.execute(
        sa.select(*_columns(fills, FillRow))
        .where(fills.c.client_order_id == row.client_order_id)
        .order_by(fills.c.filled_at_ms, fills.c.fill_id)
    )
    filled = [OrderFilled(**dict(fill._mapping)) for fill in fill_rows]
    return order, filled


def select_positions(
    conn: Connection, *, exchange: str | None = None, symbol: str | None = None
) -> list[PositionRow]:
    """Return the stored positions, optionally of one exchange and/or symbol, by market."""
    statement = sa.select(*_columns(positions, PositionRow))
    if exchange is not None:
        statement = statement.where(positions.c.exchange == exchange)
    if symbol is not None:
        statement = statement.where(positions.c.symbol == symbol)
    statement = statement.order_by(positions.c.exchange, positions.c.symbol)
    return [PositionRow(*row) for row in conn.execute(statement)]


def position_message(row: PositionRow) -> PositionChanged:
    """Rebuild the wire message of a stored position."""
    return PositionChanged(**{field.name: getattr(row, field.name) for field in fields(row)})


def _columns(table: sa.Table, row_type: type[Any]) -> list[sa.Column[Any]]:
    return [table.c[field.name] for field in fields(row_type)]


def _values(message: object, table: sa.Table, **extra: object) -> dict[str, object]:
    """Return the table's columns filled from the message's fields of the same name, and extra."""
    names = [column.name for column in table.columns if column.name not in extra]
    return {name: getattr(message, name) for name in names if hasattr(message, name)} | extra


def _tuples(messages: Sequence[Any], table: sa.Table, **extra: object) -> Rows:
    """Return the table's column names and one tuple per message (its fields, then `extra`).

    `msgspec.structs.astuple` and `itemgetter` run in C: no per-field Python work per row.
    """
    if not messages:
        return [], []
    fields = msgspec.structs.fields(messages[0])
    kept = [
        i for i, field in enumerate(fields) if field.name in table.c and field.name not in extra
    ]
    names = [fields[i].name for i in kept] + list(extra)
    pick = operator.itemgetter(*kept)
    tail = tuple(extra.values())
    astuple = msgspec.structs.astuple
    return names, [pick(astuple(m)) + tail for m in messages]


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _row(row_type: type[Any], row: sa.Row[Any]) -> Any:
    values: tuple[Any, ...] = tuple(row)
    if row_type is IndicatorRow:
        # NULL is how NaN ("still warming up") is stored.
        values = tuple(math.nan if value is None else value for value in values)
    return row_type(*values)
