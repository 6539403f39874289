"""GET /api/v1/positions/levels: the executor's saved trader in -> each open holding's exit
levels out (stop in force, remaining take-profit ladder, breakeven state)."""

from __future__ import annotations

import json

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.gateway.auth import ReadAccess
from services.gateway.dependencies import SettingsDep, StoreDep
from services.gateway.models import Milliseconds
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS

router = APIRouter(prefix=f"{API_PREFIX}/positions", tags=["trading"], responses=PROTECTED_ERRORS)


class Target(BaseModel):
    """One remaining rung of the take-profit ladder."""

    price: float
    quantity: float


class HoldingLevels(BaseModel):
    """An open holding as the executor last saved it, with the levels that will close it."""

    symbol: str
    entry_time_ms: Milliseconds
    entry_price: float
    quantity: float
    stop: float | None = Field(description="the stop in force; null: no stop-loss")
    stop_kind: str | None = Field(description="stop_loss, breakeven_stop or trailing_stop")
    targets: list[Target]
    breakeven_done: bool
    candles_held: int
    mark: float | None = Field(description="the last close the executor saw")


class Levels(BaseModel):
    """Every open holding's levels, as of the executor's last saved step."""

    account: str
    saved_at_ms: Milliseconds | None = Field(description="null: the executor never saved")
    holdings: list[HoldingLevels]


@router.get("/levels", summary="Stops and targets of open positions")
async def position_levels(_: ReadAccess, store: StoreDep, settings: SettingsDep) -> Levels:
    """Return the stop in force and the remaining targets of each open holding."""
    saved = await store.trader_state(settings.account)
    if saved is None:
        return Levels(account=settings.account, saved_at_ms=None, holdings=[])
    levels = json.loads(saved.snapshot).get("levels", [])
    holdings = [
        HoldingLevels(
            **{k: v for k, v in level.items() if k != "targets"},
            targets=[Target(price=p, quantity=q) for p, q in level["targets"]],
        )
        for level in levels
    ]
    return Levels(account=settings.account, saved_at_ms=saved.updated_at_ms, holdings=holdings)
