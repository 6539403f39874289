"""Read-side queries for the API: a market and a page position in -> the page as JSON bytes out;
each market's status (its newest candle); fill totals.

The hot reads ("the latest 1,440 candles of a market") are dominated not by Postgres, which
answers from the covering index in under a millisecond, but by the driver turning ~13,000 values
into Python objects and by encoding them again. On Postgres the page is therefore rendered to
JSON by the database and travels as one text value; SQLite (the embedded mode) renders the same
JSON in Python. Both give the same keys in the same order, numbers that parse to the same
floats, and null for a NULL or non-finite number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection

from shared.store_schema import CANDLE_VALUES, INDICATOR_VALUES, candles, fills, indicators

PageTable = Literal["candles", "indicators"]
Direction = Literal["after", "before"]

# The API's column order for each table (the response model's field order).
PAGE_COLUMNS: dict[str, tuple[str, ...]] = {
    "candles": ("exchange", "symbol", "timeframe", "open_time_ms", *CANDLE_VALUES),
    "indicators": (
        "exchange", "symbol", "timeframe", "open_time_ms", *INDICATOR_VALUES,
        "candle_closed_at_ms",
    ),
}  # fmt: skip
_TABLES = {"candles": candles, "indicators": indicators}

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page starts: strictly after or before this (open time, exchange) key."""

    direction: Direction
    open_time_ms: int
    exchange: str


@dataclass(frozen=True, slots=True)
class JsonPage:
    """A page of rows rendered as a JSON array, oldest first, and the keys at both ends."""

    body: bytes
    count: int
    first: tuple[int, str] | None  # (open_time_ms, exchange) of the oldest row
    last: tuple[int, str] | None  # of the newest row


def select_json_page(
    conn: Connection,
    *,
    table: PageTable,
    symbol: str,
    timeframe: str,
    exchange: str | None,
    start_ms: int | None,
    end_ms: int | None,
    position: Position | None,
    limit: int,
) -> JsonPage:
    """Return up to `limit` rows of one market as JSON, oldest first.

    Which rows: after `position` (or from `start_ms`) the oldest ones, going forward; otherwise
    (before `position`, or neither) the newest ones up to `end_ms`. Rows are ordered by
    (open time, exchange), so pages never split or repeat rows of one time on two exchanges.
    """
    source = _TABLES[table]
    time, venue = source.c.open_time_ms, source.c.exchange
    where: list[sa.ColumnElement[bool]] = [
        source.c.symbol == symbol,
        source.c.timeframe == timeframe,
    ]
    if exchange is not None:
        where.append(venue == exchange)
    if start_ms is not None:
        where.append(time >= start_ms)
    if end_ms is not None:
        where.append(time <= end_ms)
    forward = position.direction == "after" if position is not None else start_ms is not None
    if position is not None:
        key, boundary = sa.tuple_(time, venue), sa.tuple_(position.open_time_ms, position.exchange)
        where.append(key > boundary if position.direction == "after" else key < boundary)
        # The bare time bound lets the index range scan stop where the cursor points.
        where.append(time >= position.open_time_ms if forward else time <= position.open_time_ms)
    order = [time, venue] if forward else [time.desc(), venue.desc()]
    columns = [source.c[name] for name in PAGE_COLUMNS[table]]
    page = sa.select(*columns).where(*where).order_by(*order).limit(limit)
    if conn.dialect.name == "postgresql":
        # Equal in every row (the WHERE says so): rendered once here, not per row there.
        constants = {
            "symbol": _json.encode(symbol).decode(),
            "timeframe": _json.encode(timeframe).decode(),
        }
        return _page_postgres(conn, table, page, constants)
    rows = list(conn.execute(page))
    if not forward:
        rows.reverse()
    return _page_python(table, rows)


def _json_value(column: sa.ColumnElement[Any], nullable: bool) -> sa.ColumnElement[str]:
    """Return SQL rendering one column as a JSON value."""
    kind = column.type
    if isinstance(kind, sa.Text | sa.String):
        return sa.cast(sa.func.to_json(column), sa.Text)
    text = sa.cast(column, sa.Text)
    if isinstance(kind, sa.Float) and nullable:
        # float8 prints its shortest exact form (1e-05, 0.0891): valid JSON, except NaN and
        # the infinities, which (like NULL) are null to clients. Not-null columns hold only
        # finite numbers (validated before they are stored), so they skip the test.
        bad = sa.or_(column.is_(None), column.in_([math.inf, -math.inf]), column != column)
        return sa.case((bad, sa.literal("null")), else_=text)
    return text


def _page_postgres(
    conn: Connection, table: PageTable, page: sa.Select[Any], constants: dict[str, str]
) -> JsonPage:
    """Render the page in the database: one text value, plus the count and both end keys."""
    nullable = {c.name for c in _TABLES[table].columns if c.nullable}
    rows = page.cte("page")
    parts: list[sa.ColumnElement[str]] = []
    for i, name in enumerate(PAGE_COLUMNS[table]):
        prefix = ("{" if i == 0 else ",") + f'"{name}":'
        if name in constants:  # the same in every row: rendered once, by msgspec
            parts.append(sa.literal(prefix + constants[name]))
        else:
            parts.append(sa.literal(prefix))
            parts.append(_json_value(rows.c[name], name in nullable))
    parts.append(sa.literal("}"))
    ascending = [rows.c.open_time_ms, rows.c.exchange]

    def end_key(*order: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
        end = sa.select(*ascending).order_by(*order).limit(1).subquery()
        return sa.select(sa.func.concat(end.c.open_time_ms, ",", end.c.exchange)).scalar_subquery()

    statement = sa.select(
        sa.select(sa.func.count()).select_from(rows).scalar_subquery(),
        sa.select(
            sa.func.string_agg(
                sa.func.concat(*parts), aggregate_order_by(sa.literal(","), *ascending)
            )
        ).scalar_subquery(),
        end_key(*ascending),
        end_key(*(column.desc() for column in ascending)),
    )
    count, items, first, last = conn.execute(statement).one()
    return JsonPage(
        body=b"[" + (items or "").encode() + b"]",
        count=int(count),
        first=_end_key(first),
        last=_end_key(last),
    )


def _end_key(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    time, _, exchange = text.partition(",")
    return int(time), exchange


def _page_python(table: PageTable, rows: Sequence[sa.Row[Any]]) -> JsonPage:
    nullable = {i for i, c in enumerate(PAGE_COLUMNS[table]) if _TABLES[table].c[c].nullable}
    names = PAGE_COLUMNS[table]
    items = [
        {
            name: None if i in nullable and _not_finite(value) else value
            for i, (name, value) in enumerate(zip(names, row, strict=True))
        }
        for row in rows
    ]
    first = (rows[0].open_time_ms, rows[0].exchange) if rows else None
    last = (rows[-1].open_time_ms, rows[-1].exchange) if rows else None
    return JsonPage(body=_json.encode(items), count=len(rows), first=first, last=last)


def _not_finite(value: object) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


@dataclass(frozen=True, slots=True)
class MarketStatusRow:
    """The newest stored candle of one market."""

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    close: float
    source: str
    stored_at_ms: int


_STATUS_COLUMNS = "exchange, symbol, timeframe, open_time_ms, close, source, stored_at_ms"

# A skip scan over the primary key, (exchange, symbol, timeframe, open_time_ms): one index
# probe finds each next market, one more its newest candle. A GROUP BY would read every row.
_STATUS_POSTGRES = sa.text(f"""
WITH RECURSIVE markets AS (
  (SELECT exchange, symbol, timeframe FROM candles ORDER BY exchange, symbol, timeframe LIMIT 1)
  UNION ALL
  SELECT next.exchange, next.symbol, next.timeframe FROM markets m CROSS JOIN LATERAL (
    SELECT c.exchange, c.symbol, c.timeframe FROM candles c
    WHERE (c.exchange, c.symbol, c.timeframe) > (m.exchange, m.symbol, m.timeframe)
    ORDER BY c.exchange, c.symbol, c.timeframe LIMIT 1
  ) next
)
SELECT newest.* FROM markets m CROSS JOIN LATERAL (
  SELECT {_STATUS_COLUMNS} FROM candles c
  WHERE c.exchange = m.exchange AND c.symbol = m.symbol AND c.timeframe = m.timeframe
  ORDER BY c.open_time_ms DESC LIMIT 1
) newest
ORDER BY symbol, timeframe, exchange
""")

_STATUS_PORTABLE = sa.text(f"""
SELECT {", ".join(f"c.{name}" for name in _STATUS_COLUMNS.split(", "))}
FROM candles c JOIN (
  SELECT exchange, symbol, timeframe, max(open_time_ms) AS newest FROM candles
  GROUP BY exchange, symbol, timeframe
) m ON c.exchange = m.exchange AND c.symbol = m.symbol AND c.timeframe = m.timeframe
  AND c.open_time_ms = m.newest
ORDER BY c.symbol, c.timeframe, c.exchange
""")


def select_market_status(conn: Connection) -> list[MarketStatusRow]:
    """Return the newest stored candle of every market, by symbol, timeframe and exchange."""
    query = _STATUS_POSTGRES if conn.dialect.name == "postgresql" else _STATUS_PORTABLE
    return [MarketStatusRow(*row) for row in conn.execute(query)]


def ping(conn: Connection) -> None:
    """Run the cheapest query there is (raises if the database does not answer)."""
    conn.execute(sa.text("SELECT 1")).one()


def select_fill_totals(conn: Connection) -> tuple[int, float]:
    """Return how many fills are stored and the fees they paid in total."""
    count, fees = conn.execute(sa.select(sa.func.count(), sa.func.sum(fills.c.fee))).one()
    return int(count), float(fees or 0.0)
