"""Backtest jobs over stored candles: POST to start one, GET to follow it, its report and chart."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.gateway.auth import require_read
from services.gateway.backtests import BacktestJob, BacktestJobs, BacktestRequestError
from services.gateway.models import ErrorDetail, Exchange, Milliseconds, Symbol
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS
from shared.messages import TIMEFRAME_MS

router = APIRouter(
    prefix=f"{API_PREFIX}/backtests",
    tags=["backtests"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)


class BacktestRequest(BaseModel):
    """Which stored candles to backtest, and the settings (as in a `candlebus backtest`
    config file: top-level `equity`, `slippage_bps`, `fee_bps`, and tables `exits`,
    `switches`, `sizing`, `limits`, `strategy`, `indicators`)."""

    exchange: Exchange = "binance"
    symbols: list[Symbol] = Field(min_length=1, max_length=50)
    timeframe: str = "1m"
    start_ms: Milliseconds | None = None
    end_ms: Milliseconds | None = None
    config: dict[str, Any] = Field(default_factory=dict)


def _jobs(request: Request) -> BacktestJobs:
    jobs: BacktestJobs = request.app.state.backtests
    return jobs


def _job(request: Request, job_id: str) -> BacktestJob:
    job = _jobs(request).get(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no backtest {job_id}")
    return job


@router.post("", status_code=202, summary="Start a backtest over stored candles")
async def start_backtest(body: BacktestRequest, request: Request) -> dict[str, Any]:
    """Queue a backtest and return its id; follow it at GET /api/v1/backtests/{id}."""
    if body.timeframe not in TIMEFRAME_MS:
        raise _invalid("timeframe", f"unknown timeframe {body.timeframe!r}")
    try:
        job = _jobs(request).start(
            exchange=body.exchange, symbols=body.symbols, timeframe=body.timeframe,
            start_ms=body.start_ms, end_ms=body.end_ms, settings=body.config,
        )  # fmt: skip
    except BacktestRequestError as error:
        raise _invalid("config", str(error)) from None
    return job.view()


def _invalid(field: str, message: str) -> RequestValidationError:
    # The shape of every other 422 (and of the documented schema): a list of located errors.
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


@router.get(
    "/{job_id}",
    summary="A backtest's progress, then its report and trades",
    responses={404: {"model": ErrorDetail, "description": "No such backtest (kept: the last 20)"}},
)
async def get_backtest(
    job_id: Annotated[str, Path(min_length=1, max_length=64)], request: Request
) -> dict[str, Any]:
    """Return the job: status, progress (0..1), and once done the report with every trade."""
    return _job(request, job_id).view()


@router.get(
    "/{job_id}/chart",
    summary="A finished backtest's chart",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "text/html": {}}, "description": "The chart"},
        404: {"model": ErrorDetail, "description": "No such backtest (kept: the last 20)"},
        409: {"model": ErrorDetail, "description": "The backtest has not finished"},
    },
)
async def get_backtest_chart(
    job_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    format: Annotated[Literal["png", "html"], Query()] = "png",
) -> Response:
    """Return price with entries and exits, the equity curve and the drawdown."""
    job = _job(request, job_id)
    try:
        body = await _jobs(request).chart(job, format)
    except BacktestRequestError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    media = "image/png" if format == "png" else "text/html; charset=utf-8"
    return Response(content=body, media_type=media)
