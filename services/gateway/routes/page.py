"""GET / and /assets/<file>: nothing in -> the dashboard out (plain HTML, CSS and JS from the
package, no build step, nothing fetched from anywhere else)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import Response

WEB = Path(__file__).resolve().parent.parent / "web"

# Only these files are served, whatever the path asks for.
ASSETS: Final = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# The page talks only to the gateway that served it: a script injected into it could neither
# load code from elsewhere nor send a token away.
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with a deploy: always revalidated, never stale.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@cache
def _read(name: str) -> bytes:
    return (WEB / name).read_bytes()


@router.get("/")
async def read_page() -> Response:
    """Return the dashboard page."""
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/assets/{name}")
async def read_asset(name: str) -> Response:
    """Return one of the dashboard's scripts, its stylesheet or its icon."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such asset")
    return Response(_read(name), media_type=media_type, headers=HEADERS)
