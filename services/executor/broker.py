"""Paper costs (pure): the one implementation of slippage and fees, used by the Trader for
backtests and the paper executor alike."""

from __future__ import annotations

from shared.messages import Side


def slipped_price(price: float, side: Side, slippage_bps: float) -> float:
    """Return `price` moved against the trader by `slippage_bps`: buys pay more, sells get less."""
    direction = 1.0 if side == "buy" else -1.0
    return price * (1.0 + direction * slippage_bps / 10_000)


def fee_of(price: float, quantity: float, fee_bps: float) -> float:
    """Return the fee charged on `quantity` filled at `price`, in quote currency."""
    return price * quantity * fee_bps / 10_000
