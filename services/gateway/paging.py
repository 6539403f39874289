"""Responses of cached JSON: a page and its request in -> the next page's headers; a read and
its computation in -> the cached (or computed) HTTP response out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import Request
from fastapi.responses import Response
from starlette.types import Scope

from services.gateway.cache import Cached, Kind, ResponseCache
from services.gateway.models import MarketQuery, encode_cursor
from shared.store_pages import JsonPage
from shared.store_pages import Position as PagePosition

NEXT_CURSOR: Final = "X-Next-Cursor"

# For the OpenAPI document: what a paged answer may carry besides its rows.
PAGE_HEADERS: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "headers": {
            NEXT_CURSOR: {
                "description": "pass as `cursor` for the next page; absent on the last page",
                "schema": {"type": "string"},
            },
            "Link": {
                "description": 'the next page\'s URL, `<...>; rel="next"`',
                "schema": {"type": "string"},
            },
        }
    }
}


def next_page_headers(
    request: Request, query: MarketQuery, page: JsonPage
) -> tuple[tuple[str, str], ...]:
    """Return the headers pointing at the page after `page`, or none if it was the last.

    A page read forward (from `start_ms`, or after a cursor) continues with newer rows; one read
    backward (the latest rows, or before a cursor) continues with older ones.
    """
    if page.count < query.limit or page.first is None or page.last is None:
        return ()
    position = query.position
    forward = position.direction == "after" if position else query.start_ms is not None
    ms, exchange = page.last if forward else page.first
    cursor = encode_cursor(PagePosition("after" if forward else "before", ms, exchange))
    url = request.url.include_query_params(cursor=cursor)
    return (NEXT_CURSOR, cursor), ("Link", f'<{url}>; rel="next"')


def request_key(scope: Scope) -> str:
    """Return what identifies a read in the cache: its path and its query string, as sent."""
    query: bytes = scope["query_string"]
    return f"{scope['path']}?{query.decode('latin-1')}"


async def cached_json(
    request: Request,
    cache: ResponseCache,
    kind: Kind,
    symbols: str,
    compute: Callable[[], Awaitable[Cached]],
) -> Response:
    """Return the read's cached JSON, computing it on a miss; let the fast path serve it next
    time without routing (see cached_reads.py)."""
    key = request_key(request.scope)
    cached = await cache.fetch(kind, symbols, key, compute)
    cache.remember(key, kind, symbols, request.scope.get("route"))
    return Response(
        content=cached.body, media_type="application/json", headers=dict(cached.headers)
    )
