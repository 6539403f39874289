"""Binance's wire conventions shared by the stand-in's answers: error bodies and decimal strings.

Kept apart from `market.py`, which holds the account of `orders.py`: that module and
`trading.py` use them too, without an import cycle.
"""

from __future__ import annotations

from typing import Any

from tests.standin.series import DECIMALS


class BinanceError(Exception):
    """A request Binance refuses: HTTP status plus its {"code", "msg"} body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        """Keep the HTTP status and Binance's error code and message."""
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, Any]:
        """Return Binance's JSON error body."""
        return {"code": self.code, "msg": self.msg}


def decimal(value: float) -> str:
    """Format a price or quantity as Binance does: a fixed 8-decimal string."""
    return f"{value:.{DECIMALS}f}"
