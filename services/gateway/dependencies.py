"""Typed dependencies: the request or WebSocket in -> the store, bus, hub, cache or settings out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from services.gateway.cache import ResponseCache
from services.gateway.hub import Hub
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.store import Store


# `async def` although nothing is awaited: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hop per dependency on every request.
async def get_store(connection: HTTPConnection) -> Store:
    """Return the store the lifespan put on the app."""
    store: Store = connection.app.state.store
    return store


async def get_bus(connection: HTTPConnection) -> Bus:
    """Return the bus the lifespan put on the app."""
    bus: Bus = connection.app.state.bus
    return bus


async def get_hub(connection: HTTPConnection) -> Hub:
    """Return the WebSocket hub the lifespan put on the app."""
    hub: Hub = connection.app.state.hub
    return hub


async def get_settings(connection: HTTPConnection) -> GatewaySettings:
    """Return the settings the app was created with."""
    settings: GatewaySettings = connection.app.state.settings
    return settings


async def get_cache(connection: HTTPConnection) -> ResponseCache:
    """Return the response cache the lifespan put on the app."""
    cache: ResponseCache = connection.app.state.cache
    return cache


StoreDep = Annotated[Store, Depends(get_store)]
BusDep = Annotated[Bus, Depends(get_bus)]
HubDep = Annotated[Hub, Depends(get_hub)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
CacheDep = Annotated[ResponseCache, Depends(get_cache)]
