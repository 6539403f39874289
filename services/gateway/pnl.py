"""PnL (pure): positions and the newest closes in -> a summary per market and in total; fills in
-> the equity curve, one point per fill."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import cast

from services.executor.positions import apply_fill
from services.gateway.models import EquityPoint, MarketPnl
from shared.messages import OrderFilled, PositionChanged, Side
from shared.store import FillRow, PositionRow

MarketKey = tuple[str, str]  # (exchange, symbol)


def market_pnl(
    positions: Sequence[PositionRow], closes: Mapping[MarketKey, float]
) -> list[MarketPnl]:
    """Return each market's realized PnL and its open quantity marked at the newest close."""
    markets = []
    for row in positions:
        last = closes.get((row.exchange, row.symbol))
        unrealized = (
            row.quantity * (last - row.avg_price) if last is not None and row.quantity else 0.0
        )
        markets.append(
            MarketPnl(
                exchange=row.exchange,
                symbol=row.symbol,
                quantity=row.quantity,
                avg_price=row.avg_price,
                last_price=last,
                realized_pnl=row.realized_pnl,
                unrealized_pnl=unrealized,
            )
        )
    return markets


def equity_curve(fills: Sequence[FillRow], initial_equity: float | None) -> list[EquityPoint]:
    """Replay fills in order with the executor's position arithmetic; return the account after
    each: realized PnL (net of fees), open quantities marked at their market's last fill price,
    and the equity if the initial equity is known."""
    positions: dict[MarketKey, PositionChanged] = {}
    marks: dict[MarketKey, float] = {}
    points = []
    for row in fills:
        fill = OrderFilled(
            **{field.name: getattr(row, field.name) for field in dataclasses.fields(row)}
            | {"side": cast(Side, row.side)}
        )
        key = (fill.exchange, fill.symbol)
        positions[key] = apply_fill(positions.get(key), fill)
        marks[key] = fill.price
        realized = sum(position.realized_pnl for position in positions.values())
        unrealized = sum(
            position.quantity * (marks[market] - position.avg_price)
            for market, position in positions.items()
        )
        equity = None if initial_equity is None else initial_equity + realized + unrealized
        points.append(
            EquityPoint(
                time_ms=fill.filled_at_ms,
                realized_pnl=realized,
                unrealized_pnl=unrealized,
                equity=equity,
            )
        )
    return points
