"""Blocking query functions: a SQLAlchemy Connection and wire messages in, rows or messages out."""

from __future__ import annotations

import io
import math
import operator
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any, Literal, TypeAlias, cast

import msgspec
import numpy as np
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
    DecisionRow,
    FillRow,
    IndicatorRow,
    OrderRow,
    PositionRow,
    candles,
    decisions,
    fills,
    indicators,
    orders,
    positions,
    signals,
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
    batch = list(unique.values())
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
    """COPY rows into a per-session staging table, then insert the new ones in one statement."""
    staging = f"{table.name}_incoming"
    # Created once per pooled connection; emptied by every commit.
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} "
        f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    binary = _copy_binary(table, names, rows)
    statement = f"COPY {staging} ({', '.join(names)}) FROM STDIN"
    cursor: Any = conn.connection.cursor()
    try:
        if binary is not None:
            cursor.copy_expert(statement + " WITH (FORMAT binary)", io.BytesIO(binary))
        else:
            cursor.copy_expert(statement, io.StringIO(_copy_text(rows)))
    finally:
        cursor.close()
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


def _copy_binary(table: sa.Table, names: list[str], rows: list[tuple[Any, ...]]) -> bytes | None:
    """Render rows in COPY's binary format with numpy, or None where only text COPY fits.

    A row is (int16 field count, then per field an int32 length and the big-endian value). Rows
    are grouped by the lengths of their text fields so each group is one fixed-size numpy record
    array: about 3 µs a row against 12 µs for text, which is most of a batch's cost.
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
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, lengths in enumerate(zip(*(map(len, texts[j]) for j in texts), strict=True)):
        groups.setdefault(lengths, []).append(i)
    try:
        numbers = {
            j: np.asarray(columns[j], dtype=kind) for j, kind in enumerate(kinds) if j not in texts
        }
    except (TypeError, ValueError):
        return None  # a NULL number
    parts = [_BINARY_HEADER]
    for lengths, members in groups.items():
        width = dict(zip(texts, lengths, strict=True))
        layout: list[tuple[str, str]] = [("fields", ">i2")]
        for j, kind in enumerate(kinds):
            layout += [(f"l{j}", ">i4"), (f"v{j}", f"S{width[j]}" if j in texts else kind)]
        records = np.empty(len(members), dtype=layout)
        index = np.asarray(members)
        records["fields"] = len(kinds)
        for j in range(len(kinds)):
            if j in texts:
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
