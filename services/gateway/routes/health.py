"""GET /health: nothing in -> whether the gateway still hears the bus out (no auth)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from services.gateway.dependencies import HubDep
from services.gateway.models import Health

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
