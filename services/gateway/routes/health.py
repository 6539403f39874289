"""GET /health: nothing in -> whether the gateway still hears the bus out; GET /ready: whether
Redis, Postgres and the consumers keep up (both without a token, for probes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter, Request, Response, status

from services.gateway.dependencies import BusDep, HubDep, SettingsDep, StoreDep
from services.gateway.models import Check, Health, Ready
from shared.bus import Bus
from shared.messages import Stream
from shared.store import Store

log = logging.getLogger(__name__)

CheckName = Literal["redis", "postgres", "stream_lag"]

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    summary="Liveness",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Health}},
)
async def read_health(request: Request, response: Response, hub: HubDep) -> Health:
    """Return `ok`, or 503 once the relay has stopped (the process is then shutting down)."""
    if request.app.state.relay_error is not None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="relay stopped", websocket_clients=len(hub))
    return Health(status="ok", websocket_clients=len(hub))


@router.get(
    "/ready",
    summary="Readiness: Redis, Postgres and the consumers' stream lag",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Ready}},
)
async def read_ready(
    request: Request, response: Response, bus: BusDep, store: StoreDep, settings: SettingsDep
) -> Ready:
    """Return `ready`, or 503 with the failing checks: the relay stopped, Redis or Postgres
    does not answer in time, or a consumer group is more entries behind than allowed."""
    timeout_s = settings.ready_timeout_s
    relay_ok = request.app.state.relay_error is None
    checks = [
        Check(name="relay", ok=relay_ok, detail="tailing the streams" if relay_ok else "stopped"),
        *await asyncio.gather(
            _check("redis", _ping_redis(bus), timeout_s),
            _check("postgres", _ping_postgres(store), timeout_s),
            _check("stream_lag", _stream_lag(bus, settings.ready_max_lag_entries), timeout_s),
        ),
    ]
    ready = all(check.ok for check in checks)
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Ready(status="ready" if ready else "not ready", checks=checks)


async def _check(name: CheckName, probe: Awaitable[str], timeout_s: float) -> Check:
    # Only the kind of failure goes out: this endpoint needs no token, and an error's text can
    # name hosts or users.
    try:
        async with asyncio.timeout(timeout_s):
            return Check(name=name, ok=True, detail=await probe)
    except TimeoutError:
        return Check(name=name, ok=False, detail=f"no answer within {timeout_s:g} s")
    except LagTooLarge as error:
        return Check(name=name, ok=False, detail=str(error))
    except Exception as error:
        log.warning("readiness check %s failed: %r", name, error)
        return Check(name=name, ok=False, detail=f"failed ({type(error).__name__})")


async def _ping_redis(bus: Bus) -> str:
    await bus.last_id(Stream.CANDLES)  # a read every bus answers, Redis or in-process
    return "answers"


async def _ping_postgres(store: Store) -> str:
    await store.ping()
    return "answers"


class LagTooLarge(RuntimeError):
    """A consumer group is further behind its stream than readiness allows."""


async def _stream_lag(bus: Bus, max_entries: int) -> str:
    infos = await asyncio.gather(*(bus.group_info(stream) for stream in Stream))
    lags = {
        f"{stream.value}/{group['name']}": group["lag"]
        for stream, groups in zip(Stream, infos, strict=True)
        for group in groups
        if group["lag"] is not None
    }
    behind = {name: lag for name, lag in lags.items() if lag > max_entries}
    if behind:
        listed = ", ".join(f"{name} {lag}" for name, lag in sorted(behind.items()))
        raise LagTooLarge(f"behind by more than {max_entries} entries: {listed}")
    worst = max(lags.values(), default=0)
    return f"{len(lags)} consumer groups, largest lag {worst} entries"
