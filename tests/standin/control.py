"""Control API of the stand-in (/_standin/...): JSON in -> clock, faults, settings, request log.

For tests that run the stand-in as a separate process; in-process tests use the `Market`
object directly. Endpoints:

- GET/PUT  /_standin/clock     {"now_ms", "speed"}; PUT also takes "advance_ms"
- GET/POST/DELETE /_standin/faults   POST one fault spec (see faults.py), e.g.
  {"kind": "rate_limited", "count": 2, "retry_after_s": 1, "symbol": "ETH/BTC"}
- GET/DELETE /_standin/requests  ?since_index=N&path=/api/v3/klines
- GET/PUT  /_standin/settings  {"open_candle": bool, "weight_limit": int | null}
- GET      /_standin/account   balances {asset: [free, locked]} and every order with its fills
- PUT      /_standin/balances  {"BTC": 1.0, ...}: set free balances (orders.py, trading.py)
- GET      /_standin/markets   symbols with their intervals, and the timeline's end
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from tests.standin.faults import Fault
from tests.standin.market import Market
from tests.standin.trading import fill_entry, order_body

router = APIRouter(prefix="/_standin")


def get_market(request: Request) -> Market:
    """Return the market the app serves."""
    market: Market = request.app.state.market
    return market


MarketDep = Annotated[Market, Depends(get_market)]


class ClockState(BaseModel):
    """The clock as the control API shows it."""

    now_ms: int
    speed: float


class ClockChange(BaseModel):
    """A clock change: jump to `now_ms`, or move by `advance_ms`; optionally a new speed."""

    model_config = ConfigDict(extra="forbid")
    now_ms: int | None = None
    advance_ms: int | None = None
    speed: float | None = Field(default=None, ge=0)


class Settings(BaseModel):
    """Switches of the stand-in; a field left out of a PUT is left as it is."""

    model_config = ConfigDict(extra="forbid")
    open_candle: bool = True
    weight_limit: int | None = Field(default=None, ge=1, description="None: no limit")


@router.get("/clock")
def read_clock(market: MarketDep) -> ClockState:
    """Return the market clock."""
    return ClockState(now_ms=market.clock.now_ms(), speed=market.clock.speed)


@router.put("/clock")
def change_clock(change: ClockChange, market: MarketDep) -> ClockState:
    """Set or advance the market clock."""
    if change.now_ms is not None:
        market.clock.set(change.now_ms, speed=change.speed)
    elif change.advance_ms is not None:
        market.clock.advance(change.advance_ms)
        if change.speed is not None:
            market.clock.set(market.clock.now_ms(), speed=change.speed)
    elif change.speed is not None:
        market.clock.set(market.clock.now_ms(), speed=change.speed)
    return read_clock(market)


@router.get("/faults")
def list_faults(market: MarketDep) -> list[dict[str, Any]]:
    """Return the faults in force with their ids and remaining counts."""
    return [
        {"id": f.id, "remaining": f.remaining, "spec": f.spec.model_dump()}
        for f in market.faults.active()
    ]


@router.post("/faults", status_code=201)
def add_fault(spec: Fault, market: MarketDep) -> dict[str, int]:
    """Put a fault in force."""
    return {"id": market.faults.add(spec)}


@router.delete("/faults", status_code=204)
def clear_faults(market: MarketDep) -> None:
    """Remove every fault."""
    market.faults.clear()


@router.get("/requests")
def list_requests(
    market: MarketDep, since_index: int = 0, path: str | None = None
) -> list[dict[str, Any]]:
    """Return the request log, oldest first."""
    return [r.to_json() for r in market.log.records(path=path, since_index=since_index)]


@router.delete("/requests", status_code=204)
def clear_requests(market: MarketDep) -> None:
    """Forget the request log."""
    market.log.clear()


@router.get("/settings")
def read_settings(market: MarketDep) -> Settings:
    """Return the switches."""
    return Settings(open_candle=market.open_candle, weight_limit=market.weight.limit)


@router.put("/settings")
def change_settings(change: Settings, market: MarketDep) -> Settings:
    """Change the switches named in the body."""
    if "open_candle" in change.model_fields_set:
        market.open_candle = change.open_candle
    if "weight_limit" in change.model_fields_set:
        market.weight.limit = change.weight_limit
    return read_settings(market)


@router.get("/account")
def read_account(market: MarketDep) -> dict[str, Any]:
    """Return the account's balances and orders (oldest first, with their fills)."""
    return {
        "balances": {asset: list(held) for asset, held in market.account.balances().items()},
        "orders": [
            {**order_body(o), "fills": [fill_entry(f) for f in o.fills]}
            for o in market.account.orders()
        ],
    }


@router.put("/balances")
def change_balances(free: dict[str, float], market: MarketDep) -> dict[str, Any]:
    """Set the free balance of each asset named."""
    market.account.fund(**free)
    return read_account(market)


@router.get("/markets")
def list_markets(market: MarketDep) -> dict[str, Any]:
    """Return every symbol with its intervals, and the time the common timeline ends."""
    return {
        "end_ms": market.catalog.end_ms,
        "symbols": {
            listing.symbol: listing.intervals() for listing in market.catalog.listings.values()
        },
    }
