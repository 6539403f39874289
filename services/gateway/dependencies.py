"""Typed dependencies: the request or WebSocket in -> the store, bus, hub or settings out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from services.gateway.hub import Hub
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.store import Store


def get_store(connection: HTTPConnection) -> Store:
    """Return the store the lifespan put on the app."""
    store: Store = connection.app.state.store
    return store


def get_bus(connection: HTTPConnection) -> Bus:
    """Return the bus the lifespan put on the app."""
    bus: Bus = connection.app.state.bus
    return bus


def get_hub(connection: HTTPConnection) -> Hub:
    """Return the WebSocket hub the lifespan put on the app."""
    hub: Hub = connection.app.state.hub
    return hub


def get_settings(connection: HTTPConnection) -> GatewaySettings:
    """Return the settings the app was created with."""
    settings: GatewaySettings = connection.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
BusDep = Annotated[Bus, Depends(get_bus)]
HubDep = Annotated[Hub, Depends(get_hub)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
