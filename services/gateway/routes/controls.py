"""Hand controls: kill switch, paused symbols, closing a position, strategy parameters.

Reads need the `read` role, changes the `admin` role. Every change is a row in the store that
the service it is for reads at most once a second (the executor: kill switch, paused symbols,
close requests; the signals service: strategy parameters), so it takes effect without a
restart, survives one, and is the same for every gateway replica.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.auth import AdminAccess, ReadAccess
from services.gateway.dependencies import SettingsDep, StoreDep
from services.gateway.models import ErrorDetail, Milliseconds, Symbol
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS
from services.signals.config import ConfigError, parse_params
from services.signals.strategy import BandsParams, StochRsiBands
from shared.store import CloseRequestRow, ControlsRow, Store, StrategyParamsRow, SymbolControlRow

router = APIRouter(prefix=API_PREFIX, tags=["control"], responses=PROTECTED_ERRORS)

Reason = Annotated[
    str,
    Field(
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*$",  # one line of text: no control characters
        description="recorded and logged with the change",
    ),
]


class Controls(BaseModel):
    """The account's hand-set controls."""

    account: str
    kill_switch: bool
    reason: str | None = Field(description="why the kill switch was last set")
    updated_at_ms: Milliseconds | None = Field(description="when it was last set; null: never")
    paused_symbols: list[str] = Field(description="symbols with new entries paused")


class KillSwitchChange(BaseModel):
    """Turn the kill switch on (no new entries; exits go on) or off."""

    model_config = ConfigDict(extra="forbid")
    on: bool
    reason: Reason = ""


class SymbolChange(BaseModel):
    """Pause (no new entries; exits go on) or resume one symbol."""

    model_config = ConfigDict(extra="forbid")
    symbol: Symbol
    paused: bool
    reason: Reason = ""


class CloseRequest(BaseModel):
    """Close the position in one symbol at the next candle's open."""

    model_config = ConfigDict(extra="forbid")
    symbol: Symbol
    reason: Reason = ""


class CloseRequested(BaseModel):
    """A request to close a position, and the executor's answer once it has one."""

    symbol: str
    requested_at_ms: Milliseconds
    reason: str
    outcome: str | None = Field(
        description="null until the executor answers on the symbol's next candle: `ordered`, "
        "or why not (`no_position`, `pending_order`)"
    )
    done_at_ms: Milliseconds | None


class StrategyParams(BaseModel):
    """The StochRSI dynamic-bands strategy's parameters."""

    strategy: str
    line: str = Field(description="the StochRSI line that must cross the bands")
    buy: bool
    sell: bool
    source: str = Field(description="`api` (set here) or `default` (the service's own)")
    updated_at_ms: Milliseconds | None


class StrategyChange(BaseModel):
    """New strategy parameters; those left out keep their value."""

    model_config = ConfigDict(extra="forbid")
    line: str | None = None
    buy: bool | None = None
    sell: bool | None = None
    reason: Reason = ""


async def _controls(store: Store, account: str) -> Controls:
    row = await store.controls(account)
    paused = [r.symbol for r in await store.paused_symbols(account)]
    return Controls(
        account=account,
        kill_switch=bool(row and row.kill_switch),
        reason=row.reason if row else None,
        updated_at_ms=row.updated_at_ms if row else None,
        paused_symbols=paused,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.get("/controls", summary="Kill switch and paused symbols")
async def read_controls(_: ReadAccess, store: StoreDep, settings: SettingsDep) -> Controls:
    """Return the kill switch and the paused symbols of the executor's account."""
    return await _controls(store, settings.account)


@router.put("/controls/kill-switch", summary="Turn the kill switch on or off")
async def set_kill_switch(
    change: KillSwitchChange, _: AdminAccess, store: StoreDep, settings: SettingsDep
) -> Controls:
    """Halt (on) or allow (off) new entries; the executor applies it within a second."""
    await store.set_controls(ControlsRow(settings.account, change.on, change.reason, _now_ms()))
    return await _controls(store, settings.account)


@router.put("/controls/symbols", summary="Pause or resume a symbol")
async def set_symbol(
    change: SymbolChange, _: AdminAccess, store: StoreDep, settings: SettingsDep
) -> Controls:
    """Pause (no new entries) or resume one symbol; open positions keep their exits."""
    row = SymbolControlRow(settings.account, change.symbol, change.paused, change.reason, _now_ms())
    await store.set_symbol_control(row)
    return await _controls(store, settings.account)


@router.post(
    "/positions/close",
    summary="Close a position by hand",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"model": ErrorDetail, "description": "No open position in the symbol"}},
)
async def close_position(
    request: CloseRequest, _: AdminAccess, store: StoreDep, settings: SettingsDep
) -> CloseRequested:
    """Ask the executor to sell the whole position in a symbol: it decides on the symbol's
    next candle (a market order filling at the open of the one after), and answers here."""
    positions = await store.positions(symbol=request.symbol)
    if not any(p.quantity > 0 for p in positions):
        raise HTTPException(status.HTTP_409_CONFLICT, f"no open position in {request.symbol}")
    row = CloseRequestRow(settings.account, request.symbol, _now_ms(), request.reason)
    await store.request_close(row)
    return CloseRequested(**asdict(row))


@router.get("/positions/close-requests", summary="Close requests and their answers")
async def list_close_requests(
    _: ReadAccess, store: StoreDep, settings: SettingsDep
) -> list[CloseRequested]:
    """Return the latest 100 close requests, oldest first."""
    rows = await store.close_requests(settings.account, open_only=False)
    return [CloseRequested(**asdict(row)) for row in rows]


def _stored(row: StrategyParamsRow | None) -> BandsParams:
    """The parameters a stored row holds (the defaults without one)."""
    return BandsParams() if row is None else parse_params(json.loads(row.params), source="api")


def _strategy_params(row: StrategyParamsRow | None) -> StrategyParams:
    params = _stored(row)
    return StrategyParams(
        strategy=StochRsiBands.name,
        **asdict(params),
        source="default" if row is None else "api",
        updated_at_ms=None if row is None else row.updated_at_ms,
    )


@router.get("/strategy", summary="Strategy parameters")
async def read_strategy(_: ReadAccess, store: StoreDep) -> StrategyParams:
    """Return the parameters set here, or the defaults if none were set (a service started
    with a STRATEGY_CONFIG file uses that file until parameters are set here)."""
    return _strategy_params(await store.strategy_params(StochRsiBands.name))


@router.put("/strategy", summary="Change strategy parameters")
async def change_strategy(
    change: Annotated[StrategyChange, Body()], _: AdminAccess, store: StoreDep
) -> StrategyParams:
    """Validate and store new parameters; the signals service uses them from its next batch."""
    merged = asdict(_stored(await store.strategy_params(StochRsiBands.name)))
    merged.update(change.model_dump(exclude={"reason"}, exclude_none=True))
    try:
        params = parse_params(merged, source="strategy parameters")
    except ConfigError as error:  # the shape of every other 422: a list of located errors
        raise RequestValidationError(
            [{"loc": ("body",), "msg": str(error), "type": "value_error"}]
        ) from None
    row = StrategyParamsRow(
        StochRsiBands.name, json.dumps(asdict(params)), change.reason, _now_ms()
    )
    await store.set_strategy_params(row)
    return _strategy_params(row)
