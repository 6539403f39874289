"""What lives in the database: a URL or settings in; candles, indicators, signals, orders out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared import metrics
from shared import store_pages as pages
from shared import store_queries as queries
from shared.messages import (
    CandleClosed,
    IndicatorsComputed,
    OrderFilled,
    OrderPlaced,
    PositionChanged,
    SignalEmitted,
)
from shared.settings import CommonSettings
from shared.store_engine import create_engine
from shared.store_pages import JsonPage, MarketStatusRow, PageTable
from shared.store_pages import Position as PagePosition
from shared.store_queries import Market, TradingStep
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
    SignalRow,
    StrategyParamsRow,
    SymbolControlRow,
    TraderStateRow,
    candles,
    fills,
    indicators,
    metadata,
    orders,
    signals,
)

__all__ = [
    "CandleRow",
    "CloseRequestRow",
    "ControlsRow",
    "DecisionRow",
    "FillRow",
    "GapRow",
    "IndicatorRow",
    "Market",
    "OrderRow",
    "PositionRow",
    "SignalRow",
    "Store",
    "StrategyParamsRow",
    "SymbolControlRow",
    "TraderStateRow",
    "TradingStep",
    "create_engine",
    "downgrade",
    "metadata",
    "upgrade",
]

T = TypeVar("T")


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` with the Alembic migrations."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at `url` down to `revision` (base: drop every table)."""
    from alembic import command

    command.downgrade(_alembic_config(url), revision)


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # Passed as an attribute, not an option: a URL's %-escapes would break ini interpolation.
    config.attributes["database_url"] = url
    return config


class Store:
    """Async access to the database; each call runs in a worker thread in its own transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Store:
        """Build a store on a new engine configured by the settings."""
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_recycle_s=settings.db_pool_recycle_s,
            pool_timeout_s=settings.db_pool_timeout_s,
        )
        return cls(engine)

    async def close(self) -> None:
        """Close every pooled connection."""
        await asyncio.to_thread(self.engine.dispose)

    async def _run(self, operation: str, work: Callable[..., T], /, **arguments: Any) -> T:
        """Run `work(connection, **arguments)` in one transaction on a worker thread, timed."""

        def call() -> T:
            with metrics.DB_QUERY_SECONDS.labels(operation).time(), self.engine.begin() as conn:
                return work(conn, **arguments)

        return await asyncio.to_thread(call)

    async def save_candles(self, candles: Sequence[CandleClosed]) -> int:
        """Store new candles (duplicates skipped); return how many were new."""
        if not candles:
            return 0
        return await self._run(
            "save_candles", queries.insert_candles, batch=candles, stored_at_ms=_now_ms()
        )

    async def upsert_candles(self, candles: Sequence[CandleClosed]) -> tuple[int, int]:
        """Store candles, replacing stored ones whose values changed (the exchange revised
        them); return (inserted, revised). Identical candles are left alone."""
        if not candles:
            return 0, 0
        return await self._run(
            "upsert_candles", queries.upsert_candles, batch=candles, stored_at_ms=_now_ms()
        )

    async def save_gaps(self, gaps: Sequence[GapRow]) -> None:
        """Record missing candle ranges, or what became of them (by market and first time)."""
        if gaps:
            await self._run("save_gaps", queries.save_gaps, gaps=gaps)

    async def gaps(self, *, states: Sequence[str] = ("open",)) -> list[GapRow]:
        """Return the recorded gaps in these states ("open", "empty", "repaired")."""
        return await self._run("gaps", queries.select_gaps, states=states)

    async def save_trading_step(self, step: TradingStep) -> None:
        """Write what one executor batch changed (orders, fills, positions, decisions, the
        trader's snapshot) in one transaction."""
        await self._run("save_trading_step", queries.save_trading_step, step=step)

    async def trader_state(self, account: str) -> TraderStateRow | None:
        """Return a trader's saved snapshot, if any."""
        return await self._run("trader_state", queries.select_trader_state, account=account)

    async def set_controls(self, controls: ControlsRow) -> None:
        """Set an account's hand-set controls (the kill switch)."""
        await self._run("set_controls", queries.upsert_controls, controls=controls)

    async def controls(self, account: str) -> ControlsRow | None:
        """Return an account's hand-set controls, if any were ever set."""
        return await self._run("controls", queries.select_controls, account=account)

    async def set_symbol_control(self, control: SymbolControlRow) -> None:
        """Pause or resume a symbol by hand."""
        await self._run("set_symbol_control", queries.upsert_symbol_control, control=control)

    async def paused_symbols(self, account: str) -> list[SymbolControlRow]:
        """Return the symbols of an account paused by hand."""
        return await self._run("paused_symbols", queries.select_paused, account=account)

    async def request_close(self, request: CloseRequestRow) -> bool:
        """Record a request to close a position by hand; False if it exists already."""
        return await self._run("request_close", queries.insert_close_request, request=request)

    async def close_requests(
        self, account: str, *, open_only: bool = True, limit: int = 100
    ) -> list[CloseRequestRow]:
        """Return an account's close requests, oldest first (by default only unanswered)."""
        return await self._run(
            "close_requests", queries.select_close_requests,
            account=account, open_only=open_only, limit=limit,
        )  # fmt: skip

    async def set_strategy_params(self, row: StrategyParamsRow) -> None:
        """Set a strategy's parameters (read by the signals service every second)."""
        await self._run("set_strategy_params", queries.upsert_strategy_params, row=row)

    async def strategy_params(self, strategy: str) -> StrategyParamsRow | None:
        """Return a strategy's parameters as set through the API, if ever."""
        return await self._run("strategy_params", queries.select_strategy_params, strategy=strategy)

    async def last_candle_times(self) -> dict[Market, int]:
        """Return the newest stored candle open time of each (exchange, symbol, timeframe)."""
        return await self._run("last_candle_times", queries.last_times, table=candles)

    async def candles_between(
        self,
        *,
        exchange: str | None = None,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int,
    ) -> list[CandleRow]:
        """Return candles ascending: the first `limit` from `start_ms`, else the latest `limit`."""
        return await self._run(
            "candles_between",
            queries.select_between,
            table=candles,
            row_type=CandleRow,
            time_column="open_time_ms",
            conditions=queries.market_conditions(
                candles, exchange=exchange, symbol=symbol, timeframe=timeframe
            ),
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
        )

    async def candle_history(
        self,
        *,
        markets: Sequence[Market],
        end_ms: Mapping[Market, int] | None = None,
        limit: int,
    ) -> dict[Market, list[CandleRow]]:
        """Return the last `limit` candles at or before `end_ms` of each market, in one query."""
        if not markets:
            return {}
        return await self._run(
            "candle_history", queries.select_history, markets=markets, end_ms=end_ms, limit=limit
        )

    async def save_indicators(self, rows: Sequence[IndicatorsComputed]) -> int:
        """Store new indicator rows (duplicates skipped, NaN kept); return how many were new."""
        if not rows:
            return 0
        return await self._run(
            "save_indicators", queries.insert_indicators, batch=rows, stored_at_ms=_now_ms()
        )

    async def last_indicator_times(self) -> dict[Market, int]:
        """Return the newest stored indicator open time of each (exchange, symbol, timeframe)."""
        return await self._run("last_indicator_times", queries.last_times, table=indicators)

    async def indicator_at(
        self, *, exchange: str, symbol: str, timeframe: str, open_time_ms: int
    ) -> IndicatorsComputed | None:
        """Return the indicators stored for one candle as the wire message, if any."""
        found = await self.indicators_at([(exchange, symbol, timeframe, open_time_ms)])
        return found[0] if found else None

    async def indicators_at(
        self, candles: Sequence[tuple[str, str, str, int]]
    ) -> list[IndicatorsComputed]:
        """Return the stored indicators of many (exchange, symbol, timeframe, open time)
        candles as wire messages, oldest first; candles without a row are left out."""
        if not candles:
            return []
        return await self._run("indicators_at", queries.select_indicators, candles=candles)

    async def indicators_between(
        self,
        *,
        exchange: str | None = None,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int,
    ) -> list[IndicatorRow]:
        """Return indicator rows ascending, selected like `candles_between`."""
        return await self._run(
            "indicators_between",
            queries.select_between,
            table=indicators,
            row_type=IndicatorRow,
            time_column="open_time_ms",
            conditions=queries.market_conditions(
                indicators, exchange=exchange, symbol=symbol, timeframe=timeframe
            ),
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
        )

    async def save_signals(self, signals: Sequence[SignalEmitted]) -> int:
        """Store new signals (duplicates skipped); return how many were new."""
        if not signals:
            return 0
        return await self._run(
            "save_signals", queries.insert_signals, batch=signals, stored_at_ms=_now_ms()
        )

    async def signals_between(
        self,
        *,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int,
    ) -> list[SignalRow]:
        """Return signals ascending by candle open time, selected like `candles_between`."""
        return await self._history(
            "signals_between", signals, SignalRow, "open_time_ms", symbol, start_ms, end_ms, limit
        )

    async def record_execution(
        self, *, order: OrderPlaced, fill: OrderFilled, position: PositionChanged
    ) -> bool:
        """Store an order, its fill and the new position at once; False if the order existed."""
        return await self._run(
            "record_execution", queries.insert_execution, order=order, fill=fill, position=position
        )

    async def record_skip(self, *, signal: SignalEmitted, reason: str, decided_at_ms: int) -> bool:
        """Record that a signal led to no order and why; False if it was decided before."""
        return await self._run(
            "record_skip",
            queries.insert_skip,
            signal=signal,
            reason=reason,
            decided_at_ms=decided_at_ms,
        )

    async def decision_of(self, signal_id: str) -> DecisionRow | None:
        """Return what the executor decided for a signal, if it has seen it."""
        return await self._run("decision_of", queries.select_decision, signal_id=signal_id)

    async def order_of_signal(self, signal_id: str) -> tuple[OrderPlaced, list[OrderFilled]] | None:
        """Return the order placed for a signal and its fills, if any."""
        return await self._run(
            "order_of_signal", queries.select_order_of_signal, signal_id=signal_id
        )

    async def position(self, *, exchange: str, symbol: str) -> PositionChanged | None:
        """Return the stored position in one market as the wire message, if any."""
        found = await self._run(
            "position", queries.select_positions, exchange=exchange, symbol=symbol
        )
        return queries.position_message(found[0]) if found else None

    async def orders_between(
        self,
        *,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int,
    ) -> list[OrderRow]:
        """Return orders ascending by creation time, selected like `candles_between`."""
        return await self._history(
            "orders_between", orders, OrderRow, "created_at_ms", symbol, start_ms, end_ms, limit
        )

    async def fills_between(
        self,
        *,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int,
    ) -> list[FillRow]:
        """Return fills ascending by fill time, selected like `candles_between`."""
        return await self._history(
            "fills_between", fills, FillRow, "filled_at_ms", symbol, start_ms, end_ms, limit
        )

    async def positions(self, *, symbol: str | None = None) -> list[PositionRow]:
        """Return every stored position (of one symbol if given), ordered by market."""
        return await self._run("positions", queries.select_positions, symbol=symbol)

    async def json_page(
        self,
        table: PageTable,
        *,
        symbol: str,
        timeframe: str,
        exchange: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        position: PagePosition | None = None,
        limit: int,
    ) -> JsonPage:
        """Return one market's candles or indicators as a JSON array, oldest first (see
        `store_pages.select_json_page` for which rows)."""
        return await self._run(
            f"{table}_json_page", pages.select_json_page,
            table=table, symbol=symbol, timeframe=timeframe, exchange=exchange,
            start_ms=start_ms, end_ms=end_ms, position=position, limit=limit,
        )  # fmt: skip

    async def market_status(self) -> list[MarketStatusRow]:
        """Return the newest stored candle of every market."""
        return await self._run("market_status", pages.select_market_status)

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        await self._run("ping", pages.ping)

    async def fill_totals(self) -> tuple[int, float]:
        """Return how many fills are stored and the fees they paid in total."""
        return await self._run("fill_totals", pages.select_fill_totals)

    async def _history(
        self,
        operation: str,
        table: sa.Table,
        row_type: type[T],
        time_column: str,
        symbol: str | None,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
    ) -> list[T]:
        # Ties in time are broken by the primary key, so pages never shuffle between calls.
        [key] = table.primary_key.columns
        return await self._run(
            operation,
            queries.select_between,
            table=table,
            row_type=row_type,
            time_column=time_column,
            conditions=queries.symbol_conditions(table, symbol),
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
            tie_breaker=key.name,
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
