"""GET /: nothing in -> the live page (plain HTML and JS that subscribes over /ws) out."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).resolve().parent.parent / "web" / "index.html"

router = APIRouter()


@cache
def _page_html() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
async def read_page() -> HTMLResponse:
    """Return the live page."""
    return HTMLResponse(_page_html())
