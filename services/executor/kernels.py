"""Numba kernels of the backtester (pure): candle arrays and a holding's levels in, a row out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit


@njit(cache=True)
def quiet_run_end(
    open_: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    start: int,
    limit: int,
    stop: float,
    target: float,
    highest: float,
) -> int:
    """Return the first row in [start, limit) that is not quiet, or `limit` if all are.

    A row is quiet when its open and low are above `stop` and its open and high below
    `target` (-inf and +inf switch a side off). A quiet row whose high exceeds `highest` is
    the run's last (+inf: never), as it raises a trailing stop from the next row on.
    """
    for row in range(start, limit):
        if open_[row] <= stop or low[row] <= stop or open_[row] >= target or high[row] >= target:
            return row
        if high[row] > highest:
            return row + 1
    return limit
