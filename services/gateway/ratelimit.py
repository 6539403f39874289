"""Rate limits: an HTTP request's client in -> the request passed on, or 429 with Retry-After.

A client is its API token when it sends a known one (so clients behind one proxy address get a
budget each), otherwise its address (so unknown tokens cannot buy fresh budgets). The budget is
GCRA, a token bucket kept as one number per client: `rate_per_s` sustained with bursts of up to
`burst` requests.

Budgets live in the process. A Redis round trip per request would cost more than serving most
reads does, so with several replicas behind a load balancer a client may get up to (replicas x
rate): set the rate per replica. Behind a proxy, the address is the proxy's unless uvicorn is told
to trust its forwarding headers (`--forwarded-allow-ips`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Final

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.auth import TokenRegistry, bearer_token
from shared import metrics

MAX_CLIENTS: Final = 100_000  # budgets kept; the longest idle (hence full) ones go first


class RateLimiter:
    """GCRA budgets per client: how long a client must wait, 0 when it may go now."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate_per_s > 0 or burst < 1:
            raise ValueError(f"need rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self._interval_s = 1.0 / rate_per_s
        self._tolerance_s = self._interval_s * (burst - 1)
        self._max_clients = max_clients
        self._clock = clock
        # When each client's budget will be full again ("theoretical arrival time").
        self._full_at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._full_at)

    def wait_s(self, client: str) -> float:
        """Spend one request of the client's budget and return 0, or return how long until
        one is available (nothing is spent then)."""
        now = self._clock()
        full_at = max(self._full_at.get(client, now), now)
        if full_at - now > self._tolerance_s:
            return full_at - now - self._tolerance_s
        self._full_at[client] = full_at + self._interval_s
        self._full_at.move_to_end(client)
        while len(self._full_at) > self._max_clients:
            self._full_at.popitem(last=False)
        return 0.0


class RateLimitMiddleware:
    """Answer 429 with `Retry-After` (whole seconds) to a client over its budget."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        tokens: TokenRegistry,
        exempt_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self._limiter = limiter
        self._tokens = tokens
        self._exempt = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self.app(scope, receive, send)
            return
        client, kind = self._client(scope)
        wait_s = self._limiter.wait_s(client)
        if wait_s <= 0:
            await self.app(scope, receive, send)
            return
        metrics.HTTP_RATE_LIMITED.labels(client_kind=kind).inc()
        retry_after = max(1, math.ceil(wait_s))
        response = JSONResponse(
            {"detail": f"rate limit exceeded: retry after {retry_after} s"},
            status_code=429,
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)

    def _client(self, scope: Scope) -> tuple[str, str]:
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = bearer_token(value.decode("latin-1"))
                break
        if token is not None and self._tokens.role_of(token) is not None:
            return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32], "token"
        address = scope.get("client")
        return "address:" + (address[0] if address else "unknown"), "address"
