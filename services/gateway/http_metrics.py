"""ASGI middleware: HTTP requests in -> Prometheus counts and timings by route template out."""

from __future__ import annotations

import functools
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics

UNMATCHED = "unmatched"


class HttpMetricsMiddleware:
    """Count requests and time them, labelled by the matched route's template.

    The template (`/api/v1/candles`), never the raw path, is the label: raw paths of unknown URLs
    would give Prometheus one series per scanner probe.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app raises before starting a response
        started = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            route = route_template(scope)
            _counter(scope["method"], route, status).inc()
            _timer(route).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """Return the template of the route the router matched, or `unmatched`."""
    # The router stores the matched route in the scope it shares with this middleware.
    template = getattr(scope.get("route"), "path_format", None)
    return template if isinstance(template, str) else UNMATCHED


# `labels()` hashes and validates its arguments on every call; the series are few (templates x
# methods x statuses), so each child is looked up once and kept.
@functools.cache
def _counter(method: str, route: str, status: int) -> Counter:
    return metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status))


@functools.cache
def _timer(route: str) -> Histogram:
    return metrics.HTTP_REQUEST_SECONDS.labels(route=route)
