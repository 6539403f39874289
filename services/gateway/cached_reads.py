"""The fast path of cached reads: a GET whose identical request was answered before in -> its
body from the process's cache out, before routing; anything else passes on untouched.

Routing, query validation and dependency injection cost a FastAPI request several times what a
cached body costs to send. A request key (path and query string, byte for byte) is only known
here after the route answered it with 200 for some caller, so it is valid; what is checked
again here is the caller's token (the read role), and whether the kind's generation still
matches (`ResponseCache.lookup`). A miss, an unknown or missing token, or any other method
passes on to the app, which answers as if this module did not exist.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.auth import Role, TokenRegistry, bearer_token
from services.gateway.cache import ResponseCache
from services.gateway.paging import request_key

_JSON = (b"content-type", b"application/json")


class CachedReadsMiddleware:
    """Answer a repeated read from the response cache, before the router sees it."""

    def __init__(self, app: ASGIApp, *, tokens: TokenRegistry) -> None:
        self.app = app
        self._tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The cache is built by the lifespan: until then (and for tests without one) pass on.
        cache: ResponseCache | None = getattr(scope["app"].state, "cache", None)
        if scope["type"] != "http" or scope["method"] != "GET" or cache is None:
            await self.app(scope, receive, send)
            return
        found = cache.lookup(request_key(scope))
        if found is None or not self._may_read(scope):
            await self.app(scope, receive, send)
            return
        cached, route = found
        scope["route"] = route  # the metrics label: the route's template, as if routed
        headers = [_JSON, (b"content-length", str(len(cached.body)).encode())]
        headers += [(name.lower().encode(), value.encode()) for name, value in cached.headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": cached.body})

    def _may_read(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                role = self._tokens.role_of(bearer_token(value.decode("latin-1")))
                return role is not None and role.allows(Role.READ)
        return False
