"""Backtest jobs: a request in -> a job that runs the backtester over stored candles in a worker
thread, its progress, report and chart out. One job runs at a time; the last few are kept."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from services.executor.backtest import BacktestConfig, BacktestResult, run_backtest
from services.executor.backtest_cli import result_json
from services.executor.backtest_settings import build_config
from services.executor.candles import CandleArrays
from services.executor.chart import write_chart
from services.indicators.export import InputError
from shared.store import Store

JobStatus = Literal["queued", "running", "done", "failed"]
MAX_CANDLES = 1_000_000  # per market


class BacktestRequestError(ValueError):
    """A backtest that cannot run as asked; the message says why."""


@dataclasses.dataclass
class BacktestJob:
    """One backtest: what was asked, how far it is, and what it found."""

    id: str
    exchange: str
    symbols: tuple[str, ...]
    timeframe: str
    start_ms: int | None
    end_ms: int | None
    config: BacktestConfig
    created_at_ms: int
    status: JobStatus = "queued"
    progress: float = 0.0
    error: str | None = None
    result: dict[str, Any] | None = None
    _outcome: tuple[BacktestResult, dict[str, CandleArrays]] | None = None

    def view(self) -> dict[str, Any]:
        """The job as the API shows it (the report only once done)."""
        return {
            "id": self.id,
            "status": self.status,
            "progress": round(self.progress, 4),
            "exchange": self.exchange,
            "symbols": list(self.symbols),
            "timeframe": self.timeframe,
            "created_at_ms": self.created_at_ms,
            "error": self.error,
            "result": self.result,
        }


class BacktestJobs:
    """Runs backtest jobs one at a time in a worker thread; keeps the newest `keep`."""

    def __init__(self, store: Store, *, keep: int = 20) -> None:
        self._store = store
        self._keep = keep
        self._jobs: OrderedDict[str, BacktestJob] = OrderedDict()
        self._one_at_a_time = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self,
        *,
        exchange: str,
        symbols: Sequence[str],
        timeframe: str,
        start_ms: int | None,
        end_ms: int | None,
        settings: Mapping[str, Any],
    ) -> BacktestJob:
        """Check the request, queue the job and return it (BacktestRequestError if bad)."""
        try:
            config = build_config(settings, {}, "config")
        except InputError as error:
            raise BacktestRequestError(str(error)) from None
        job = BacktestJob(
            id=uuid.uuid4().hex, exchange=exchange, symbols=tuple(symbols),
            timeframe=timeframe, start_ms=start_ms, end_ms=end_ms, config=config,
            created_at_ms=int(time.time() * 1000),
        )  # fmt: skip
        self._jobs[job.id] = job
        while len(self._jobs) > self._keep:
            self._jobs.popitem(last=False)
        task = asyncio.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: str) -> BacktestJob | None:
        """Return a kept job."""
        return self._jobs.get(job_id)

    async def close(self) -> None:
        """Stop every job still running (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def chart(self, job: BacktestJob, kind: Literal["png", "html"]) -> bytes:
        """Draw a finished job's chart (price with entries and exits, equity, drawdown)."""
        if job._outcome is None:
            raise BacktestRequestError(f"backtest {job.id} is {job.status}: no chart yet")
        result, markets = job._outcome

        def draw() -> bytes:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"chart.{kind}"
                write_chart(path, result, markets)
                return path.read_bytes()

        return await asyncio.to_thread(draw)

    async def _run(self, job: BacktestJob) -> None:
        async with self._one_at_a_time:
            job.status = "running"
            try:
                markets = await self._markets(job)

                def progress(done: int, total: int) -> None:
                    job.progress = done / total if total else 1.0

                outcome = await asyncio.to_thread(
                    run_backtest, markets, job.config, progress=progress
                )
            except Exception as error:
                job.status, job.error = "failed", str(error) or type(error).__name__
                return
            job._outcome = (outcome, markets)
            job.result = result_json(outcome, markets, job.config)
            job.progress, job.status = 1.0, "done"

    async def _markets(self, job: BacktestJob) -> dict[str, CandleArrays]:
        markets: dict[str, CandleArrays] = {}
        for symbol in job.symbols:
            rows = await self._store.candles_between(
                exchange=job.exchange, symbol=symbol, timeframe=job.timeframe,
                start_ms=job.start_ms, end_ms=job.end_ms, limit=MAX_CANDLES,
            )  # fmt: skip
            if not rows:
                raise BacktestRequestError(f"no stored {job.timeframe} candles of {symbol}")
            columns = np.array(
                [(r.open_time_ms, r.open, r.high, r.low, r.close) for r in rows], dtype=float
            )
            markets[symbol] = CandleArrays(
                columns[:, 0].astype(np.int64), columns[:, 1], columns[:, 2], columns[:, 3],
                columns[:, 4], timeframe=job.timeframe, exchange=job.exchange,
            )  # fmt: skip
        return markets
