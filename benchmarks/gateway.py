"""Gateway benchmark: the real gateway process against a bare FastAPI app and a bare broadcast.

Servers run as separate processes on free ports, each one process with one event loop:
  - the gateway, `python -m services.gateway`, on a fresh Postgres database (migrated, loaded
    with the real candles of the team data folder, vacuumed, one position per market) and
    Redis database 10 (flushed before and after); for the HTTP phases a second gateway with
    CACHE_ENABLED=false shows the response cache's miss path;
  - a bare FastAPI "hello world" under uvicorn with the gateway's uvicorn options;
  - a bare `websockets` server that sends each message to every client with `broadcast()`.
The yardsticks are measured in the same run as the gateway, so the ratios travel between
machines; the absolute figures do not. The gateway's rate limit is raised out of the way (all
load comes from one token), not switched off.

  1. HTTP, most requests/s: wrk with one thread and --connections keep-alive connections, for
     --http-seconds, --rounds times in turn: the hello world, the latest 1,440 candles of one
     market (`/api/v1/candles?symbol=ETH/BTC&timeframe=1m&limit=1440`) and `/api/v1/positions`
     (then the same two without the cache). Ratios are per round; the median is judged.
  2. HTTP at a constant 200 requests/s for --rate-seconds each: an open-loop client (a timer
     thread starts each request at its scheduled time, whether or not earlier ones have been
     answered; at most 64 connections, as wrk2); latency runs from the scheduled time to the
     last byte of the response, so a stalled server is charged for every request it held up.
  3. WebSocket fan-out: --clients connections (--client-processes processes of the
     `websockets` Sans-I/O client) to the bare server, then subscribed to `candles:ETH/BTC`
     on the gateway, once offering permessage-deflate (what browsers and the `websockets`
     client do by default) and once not (--ws-compression); real CandleClosed messages at 10
     and at 100 per second for --ws-seconds each, the gateway's published into Redis with
     RedisBus.publish, the bare server's by its own publisher loop, each due on a whole
     millisecond that it carries in `closed_at_ms`. Latency is from that due time to the
     client's receipt; messages not delivered --drain-seconds after the window count as
     infinitely late; delivered msg/s counts arrivals while the window is open.
  4. Memory: the gateway's RSS every 2 s over --minutes while its --clients subscribers get
     10 messages/s and it answers 200 requests/s (latest candles and positions in turn; each
     candle published makes the next candles read a cache miss). Flat: over the second half
     of the run (the first fills the bounded response cache) RSS trends up by less than
     1 MB/min and never rises more than 5 MB above the first half's peak.

    python benchmarks/gateway.py [--minutes 10] [--quick] [--only http|ws|memory]

Needs wrk (Debian: `apt-get install -y wrk`), Redis and Postgres (`make services`). The client
processes share the machine's cores with the servers: on a small machine their work is part of
every latency figure, for the gateway and the yardsticks alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
import uvloop
from msgspec.structs import replace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from gateway_peers import (  # noqa: E402
    CHANNEL,
    SYMBOL,
    candle_at,
    histogram_percentile,
    merge_reports,
    ohlcv_rows,
    paced,
)

from services.collector.ingest import candles_from_rows  # noqa: E402
from services.collector.sources.replay import parse_file_name, read_rows  # noqa: E402
from shared.bus import RedisBus  # noqa: E402
from shared.messages import TIMEFRAME_MS, CandleClosed, Stream  # noqa: E402
from shared.store import Store, create_engine, upgrade  # noqa: E402
from shared.store_schema import positions  # noqa: E402
from tests.conftest import DATA_DIR  # noqa: E402
from tests.e2e.harness import Pipeline, free_port, wait_until  # noqa: E402

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/10"
RUN_LOCK = 0x6761_7465  # the advisory lock key that keeps a second run out
PEERS = HERE / "gateway_peers.py"
CANDLES_PATH = "/api/v1/candles?symbol=ETH%2FBTC&timeframe=1m&limit=1440"
POSITIONS_PATH = "/api/v1/positions"
LATEST = 1_440
RATE = 200.0  # requests/s of the constant-rate and memory phases
LATENCY_RATE = 10.0  # msg/s: p99 delivery latency against the bare server's, in rounds
THROUGHPUT_RATE = 100.0  # msg/s: messages delivered against the bare server's
MEMORY_WS_RATE = 10.0
RSS_EVERY_S = 2.0
OPEN_LOOP_CONNECTIONS = 64
# Targets of the gateway issue (acceptance item 4).
MIN_THROUGHPUT_RATIO = 0.5
MAX_P99_MS = 10.0
MAX_WS_P99_RATIO = 1.5
MIN_WS_DELIVERY_RATIO = 1.0
# "Flat": in the second half of the run (the first fills the bounded response cache and the
# allocator's pools) RSS trends up by less than this, and never rises this far above the first
# half's peak.
MAX_RSS_SLOPE_MB_PER_MIN = 1.0
MAX_RSS_NEW_PEAK_MB = 5.0
KEPT_UP = 0.995  # share of the offered messages both servers delivered in the window: a tie
JUDGED = ("candles", "positions")  # the gateway as configured; "no cache" is the miss path
# The rate limit stays in the path but never refuses: the load comes from one token.
GATEWAY_ENV = {
    "LOG_LEVEL": "WARNING",
    "HOST": "127.0.0.1",
    "RATE_LIMIT_PER_S": "1000000",
    "RATE_LIMIT_BURST": "1000000",
}


def log(line: str = "") -> None:
    print(line, flush=True)


def fmt(value: float, digits: int = 1) -> str:
    return "inf" if math.isinf(value) else f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


# -- processes, database, data ------------------------------------------------------------------


@dataclass
class Children:
    """Every process this script starts itself, stopped on the way out whatever happens."""

    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, *args: str, pipes: bool = False) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, str(PEERS), *args],
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log_file,
                stderr=log_file,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops them in order
            )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)

    def tail(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""


def read_line(process: subprocess.Popen[bytes], expected: str, timeout_s: float) -> str:
    """Return the next stdout line of a peer process, which must start with `expected`."""
    stdout = process.stdout
    assert stdout is not None
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    line = result[0].decode().strip() if result else ""
    if not line.startswith(expected):
        raise RuntimeError(f"expected {expected!r} from process {process.pid}, got {line!r}")
    return line


def tell(process: subprocess.Popen[bytes], command: str) -> None:
    assert process.stdin is not None
    process.stdin.write(command.encode() + b"\n")
    process.stdin.flush()


@contextmanager
def only_run() -> Iterator[None]:
    """Hold a Postgres advisory lock for the run: two runs at once would flush each other's
    Redis database and share the cores, so a second one stops at once."""
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.execute(sa.text(f"SELECT pg_try_advisory_lock({RUN_LOCK})")).scalar():
                sys.exit("another gateway benchmark is running (it uses Redis database 10)")
            yield  # the lock lives as long as this session: a killed run frees it too
    finally:
        admin.dispose()


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database and an empty Redis database 10, both removed afterwards."""
    name = f"cbbench_gw_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    redis.Redis.from_url(REDIS_URL).flushdb()
    try:
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
        upgrade(url)
        yield url
    finally:
        redis.Redis.from_url(REDIS_URL).flushdb()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def market_files() -> list[Path]:
    return sorted(DATA_DIR.glob("*.json")) if DATA_DIR.exists() else []


async def load(url: str) -> tuple[int, int, str]:
    """Store every real candle file (or a random walk of ETH/BTC) and one position per symbol;
    return (candles, positions, what the candles are)."""
    batches: list[list[CandleClosed]] = []
    files = market_files()
    for path in files:
        symbol, timeframe = parse_file_name(path)
        candles, _ = candles_from_rows(
            read_rows(path), exchange="binance", symbol=symbol, timeframe=timeframe,
            source="replay",
        )  # fmt: skip
        period_ms = TIMEFRAME_MS[timeframe]
        batches.append([replace(c, closed_at_ms=c.open_time_ms + period_ms) for c in candles])
    what = f"{len(files)} real candle files"
    if not any(c.symbol == SYMBOL and c.timeframe == "1m" for b in batches for c in b[:1]):
        rows, what = ohlcv_rows()
        batches.append([candle_at(rows, i, int(rows[i][0]) + 60_000) for i in range(len(rows))])
    store = Store(create_engine(url))
    try:
        stored = 0
        for batch in batches:
            for first in range(0, len(batch), 5_000):
                stored += await store.save_candles(batch[first : first + 5_000])
    finally:
        await store.close()
    symbols = sorted({batch[0].symbol for batch in batches})
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            positions.insert(),
            [
                {
                    "exchange": "binance",
                    "symbol": symbol,
                    "quantity": 1.5 + i,
                    "avg_price": 0.05 + 0.001 * i,
                    "realized_pnl": 0.002 * i - 0.01,
                    "updated_at_ms": 1_517_000_000_000 + i,
                    "cause_fill_id": f"fill-{i}",
                }
                for i, symbol in enumerate(symbols)
            ],
        )
        # A table in service has been vacuumed (migration 0005 sets autovacuum to run every
        # 50,000 inserted rows); the bulk load has not been yet: the latest candles would
        # otherwise cost a heap fetch each.
        conn.execute(sa.text("VACUUM (ANALYZE) candles"))
        conn.execute(sa.text("VACUUM (ANALYZE) positions"))
    engine.dispose()
    return stored, len(symbols), what


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- HTTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    token: str


def wrk(target: Target, seconds: float, connections: int) -> tuple[float, float]:
    """Return (requests/s, bytes per response) wrk gets from one target; fail on any error or
    non-200 answer."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
        "-H", f"Authorization: Bearer {target.token}",
        f"http://127.0.0.1:{target.port}{target.path}",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30)
    text = out.stdout
    for problem in ("Non-2xx or 3xx responses", "Socket errors"):
        if problem in text:
            raise RuntimeError(f"wrk on {target.name}: {problem}:\n{text}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", text)
    if rate is None or transfer is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{text}\n{out.stderr}")
    unit = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}[transfer.group(2)]
    return float(rate.group(1)), float(transfer.group(1)) * unit / float(rate.group(1))


@dataclass
class Paced:
    """What an open-loop run measured, in ms."""

    latency_ms: list[float]
    late_start_ms: list[float]  # how late the client itself started each request
    errors: list[str]
    unanswered: int = 0  # still waiting 30 s after the last was due

    def p(self, q: float) -> float:
        """The q-quantile of latency, failed and unanswered requests counting as infinite."""
        failed = len(self.errors) + self.unanswered
        return percentile(self.latency_ms + [math.inf] * failed, q)


async def _exchange(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
) -> int:
    reader, writer = connection
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if found is None:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    await reader.readexactly(int(found.group(1)))
    return int(head[9:12])


async def open_loop(
    port: int, paths: list[str], token: str, rate: float, seconds: float, warm_s: float = 1.0
) -> Paced:
    """Send GETs of `paths` in turn at `rate`/s for `warm_s + seconds`, each at its scheduled
    time; return the latencies of the requests scheduled after the warm-up."""
    loop = asyncio.get_running_loop()
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
        for path in paths
    ]
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
    limit = asyncio.Semaphore(OPEN_LOOP_CONNECTIONS)
    result = Paced([], [], [])
    running: set[asyncio.Task[None]] = set()
    first = time.perf_counter() + 0.05
    measured_from = first + warm_s

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while idle:
            reader, writer = idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()  # the server closed it after its keep-alive timeout
        return await asyncio.open_connection("127.0.0.1", port)

    async def one(number: int, due: float) -> None:
        started = time.perf_counter()
        async with limit:  # as wrk2: a fixed number of connections; the queue counts as latency
            request = requests[number % len(requests)]
            status = 0
            for attempt in (1, 2):  # a kept-alive connection may close under us: once more
                pair = await connection()
                try:
                    status = await _exchange(pair, request)
                    break
                except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
                    pair[1].close()
                    if attempt == 2:
                        result.errors.append(repr(exc))
                        return
            done = time.perf_counter()
            idle.append(pair)
        if status != 200:
            result.errors.append(f"status {status}")
        elif due >= measured_from:
            result.latency_ms.append((done - due) * 1000)
            result.late_start_ms.append((started - due) * 1000)

    def start(number: int, due: float) -> None:
        task = loop.create_task(one(number, due))
        running.add(task)
        task.add_done_callback(running.discard)

    stop = threading.Event()

    def ticker() -> None:
        # time.sleep has microsecond resolution; the event loop's timers only milliseconds.
        for number in range(int((warm_s + seconds) * rate)):
            due = first + number / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if stop.is_set():
                return
            loop.call_soon_threadsafe(start, number, due)

    try:
        await asyncio.to_thread(ticker)
    finally:
        stop.set()  # on Ctrl-C too: the thread must not outlive the run
    await asyncio.sleep(0.05)
    if running:
        await asyncio.wait(running, timeout=30)
    result.unanswered = len(running)
    for task in list(running):
        task.cancel()
    for _, writer in idle:
        writer.close()
    return result


# -- WebSocket fan-out ----------------------------------------------------------------------------


@dataclass
class Fanout:
    """One fan-out window: deliveries and latency at the clients, CPU of both sides."""

    rate: float
    seconds: float
    clients: int
    expected: int  # deliveries: messages due in the window x clients
    merged: dict[str, Any]
    server_cpu: float  # share of one core while publishing
    client_cpu: float  # the client processes together, share of one core
    drain_s: float
    published_s: float  # how long the publisher ran

    @property
    def server_us_per_delivery(self) -> float:
        """Server CPU per message delivered to one client."""
        return self.server_cpu * self.published_s * 1e6 / max(1, int(self.merged["events"]))

    def p(self, q: float) -> float:
        return histogram_percentile(self.merged["latency"], self.expected, q)

    @property
    def delivered_per_s(self) -> float:
        return float(self.merged["in_window"]) / self.seconds

    @property
    def kept_up(self) -> float:
        """Delivered in the window as a share of what was offered in it."""
        return self.delivered_per_s / (self.rate * self.clients)

    @property
    def on_time(self) -> float:
        return float(sum(self.merged["latency"].values())) / max(1, self.expected)

    @property
    def events_per_frame(self) -> float:
        return float(self.merged["events"]) / max(1, int(self.merged["frames"]))


def due_in(rate: float, start_ms: int, first_ms: int, end_ms: int) -> int:
    """Return how many of a paced publisher's due times fall in [first_ms, end_ms)."""
    step = 1000.0 / rate
    count, number = 0, 0
    while (due := start_ms + round(number * step)) < end_ms:
        count += due >= first_ms
        number += 1
    return count


Publish = Callable[[float, int, int], Coroutine[Any, Any, int]]


class ClientFleet:
    """The client processes of one server, connected (and subscribed) until closed."""

    def __init__(
        self,
        children: Children,
        url: str,
        total: int,
        processes: int,
        token: str | None,
        subscribe: str | None,
        compression: bool,
    ) -> None:
        self.children = children
        self.total = total
        self.processes: list[subprocess.Popen[bytes]] = []
        per = [total // processes + (i < total % processes) for i in range(processes)]
        for number, count in enumerate(per):
            args = ["clients", "--url", url, "--connections", str(count)]
            if token:
                args.append(f"--token={token}")  # a token may begin with "-"
            if subscribe:
                args += ["--subscribe", subscribe]
            if compression:
                args.append("--compression")
            self.processes.append(children.start(f"clients-{number}", *args, pipes=True))
        for number, process in enumerate(self.processes):
            try:
                read_line(process, "ready", timeout_s=180)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{children.tail(f'clients-{number}')}") from None

    async def window(
        self, publish: Publish, server_pid: int, rate: float, seconds: float, warm_s: float,
        drain_s: float,
    ) -> Fanout:  # fmt: skip
        """Publish at `rate` for `warm_s + seconds`, measure the last `seconds`, then report."""
        start_ms = int(time.time() * 1000) + 500
        first_ms = start_ms + int(warm_s * 1000)
        end_ms = first_ms + int(seconds * 1000)
        for process in self.processes:
            tell(process, f"measure {first_ms} {end_ms}")
        told = time.perf_counter()
        publishing = asyncio.create_task(publish(rate, start_ms, end_ms))
        await asyncio.sleep(max(0.0, start_ms / 1000 - time.time()))
        cpu_before, cpu_from = cpu_s(server_pid), time.time()
        await publishing
        # A publisher that fell behind returns after end_ms: CPU over the time it really ran.
        published_s = time.time() - cpu_from
        server_cpu = (cpu_s(server_pid) - cpu_before) / published_s
        await asyncio.sleep(drain_s)
        for process in self.processes:
            tell(process, "report")
        reports = [
            json.loads(await asyncio.to_thread(read_line, process, "{", 60))
            for process in self.processes
        ]
        merged = merge_reports(reports)
        client_cpu = sum(merged["cpu_s"]) / (time.perf_counter() - told)
        expected = due_in(rate, start_ms, first_ms, end_ms) * self.total
        return Fanout(
            rate, seconds, self.total, expected, merged, server_cpu, client_cpu, drain_s,
            published_s,
        )  # fmt: skip

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                tell(process, "quit")
        for process in self.processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            self.children.stop(process)


def gateway_publisher(bus: RedisBus) -> Publish:
    rows, _ = ohlcv_rows()

    async def publish(rate: float, start_ms: int, end_ms: int) -> int:
        async def send(number: int, due_ms: int) -> None:
            await bus.publish(Stream.CANDLES, candle_at(rows, number, due_ms))

        return await paced(rate, start_ms, end_ms, send)

    return publish


def bare_publisher(server: subprocess.Popen[bytes]) -> Publish:
    async def publish(rate: float, start_ms: int, end_ms: int) -> int:
        tell(server, f"publish {rate} {start_ms} {end_ms}")
        # A server that cannot keep up (deflate at 100 msg/s) sends its last message long
        # after the window: give it the time that takes, about a minute per 20 s.
        behind_s = 4 * (end_ms - start_ms) / 1000
        line = await asyncio.to_thread(
            read_line, server, "published", (end_ms / 1000 - time.time()) + 60 + behind_s
        )
        return int(line.split()[1])

    return publish


def show_fanout(name: str, result: Fanout) -> None:
    log(
        f"  {name:8s} {result.rate:4.0f} msg/s  p50 {fmt(result.p(0.5)):>7s} ms  "
        f"p99 {fmt(result.p(0.99)):>7s} ms  delivered {result.delivered_per_s:9,.0f} msg/s "
        f"of {result.rate * result.clients:,.0f} offered ({result.on_time:.1%} of the window's "
        "messages arrived by the report)"
    )
    log(
        f"  {'':8s} {result.events_per_frame:4.1f} msg/frame, server CPU {result.server_cpu:4.0%} "
        f"({result.server_us_per_delivery:.1f} us per delivery), clients CPU "
        f"{result.client_cpu:4.0%}"
    )


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    rps: dict[str, list[float]] = field(default_factory=dict)
    paced: dict[str, Paced] = field(default_factory=dict)
    fanout: dict[tuple[bool, str, float], Fanout] = field(default_factory=dict)
    # 10 msg/s, round by round: (bare, gateway) measured back to back
    latency_rounds: dict[bool, list[tuple[Fanout, Fanout]]] = field(default_factory=dict)
    memory_compression: bool = True
    rss: list[tuple[float, float]] = field(default_factory=list)
    memory_http: Paced | None = None
    memory_ws: Fanout | None = None
    memory_minutes: float = 0.0


def run_http(args: argparse.Namespace, targets: list[Target], figures: Figures) -> None:
    log(
        f"HTTP, most requests/s: wrk -t1 -c{args.connections}, {args.http_seconds:g} s per "
        f"target, {args.rounds} round(s)"
    )
    for target in targets:
        _, size = wrk(target, 2, args.connections)  # warm-up: connections, caches, first queries
        log(f"  {target.name}: {size / 1024:,.1f} KiB per response, headers included")
    for round_ in range(args.rounds):
        line = []
        for target in targets:
            rps, _ = wrk(target, args.http_seconds, args.connections)
            figures.rps.setdefault(target.name, []).append(rps)
            line.append(f"{target.name} {rps:,.0f}")
        log(f"  round {round_ + 1} (req/s): " + ", ".join(line))
    log(f"HTTP at a constant {RATE:.0f} requests/s, open loop, {args.rate_seconds:g} s each")
    for target in targets:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(
                open_loop(target.port, [target.path], target.token, RATE, args.rate_seconds)
            )
        figures.paced[target.name] = result
        if result.errors or result.unanswered:
            log(
                f"  {target.name}: {len(result.errors)} failed, {result.unanswered} unanswered "
                f"(counted as infinitely late); first failure: {result.errors[:1]}"
            )
        log(
            f"  {target.name:18s} p50 {fmt(result.p(0.5), 2):>7s} ms  p99 "
            f"{fmt(result.p(0.99), 2):>7s} ms  max {fmt(result.p(1.0), 2):>7s} ms  "
            f"(n={len(result.latency_ms):,}; the client "
            f"started requests late by p99 {percentile(result.late_start_ms, 0.99):.2f} ms)"
        )


def compression_modes(args: argparse.Namespace) -> list[bool]:
    return {"on": [True], "off": [False], "both": [True, False]}[args.ws_compression]


def mode_name(compression: bool) -> str:
    return "permessage-deflate offered" if compression else "no compression offered"


async def run_ws(
    args: argparse.Namespace,
    children: Children,
    bare: subprocess.Popen[bytes],
    bare_port: int,
    pipeline: Pipeline,
    figures: Figures,
) -> None:
    log(
        f"WebSocket fan-out: {args.clients:,} clients in {args.client_processes} processes, "
        f"{args.ws_seconds:g} s per rate after {args.warm_seconds:g} s of warm-up"
    )
    subscribe = json.dumps({"op": "subscribe", "channels": [CHANNEL]})
    bus = RedisBus(REDIS_URL)
    gateway_pid = pipeline.processes["gateway"].pid
    servers: list[tuple[str, str, str | None, str | None, Publish, int]] = [
        ("bare", f"ws://127.0.0.1:{bare_port}/", None, None, bare_publisher(bare), bare.pid),
        (
            "gateway",
            f"ws://127.0.0.1:{pipeline.gateway_port}/ws",
            pipeline.read_token,
            subscribe,
            gateway_publisher(bus),
            gateway_pid,
        ),
    ]
    try:
        for compression in compression_modes(args):
            log(f" {mode_name(compression)}:")
            # Both fleets stay connected (the idle one costs nothing), so the 10 msg/s windows
            # can alternate between the servers: drift on a shared machine hits both alike.
            fleets = {}
            try:
                for name, url, token, request, *_ in servers:
                    fleets[name] = await asyncio.to_thread(
                        ClientFleet, children, url, args.clients, args.client_processes,
                        token, request, compression,
                    )  # fmt: skip
                rounds: list[tuple[Fanout, Fanout]] = []
                for round_ in range(args.ws_rounds):
                    order = servers if round_ % 2 == 0 else servers[::-1]
                    got: dict[str, Fanout] = {}
                    for name, _, _, _, publish, pid in order:
                        got[name] = await fleets[name].window(
                            publish, pid, LATENCY_RATE, args.ws_seconds, args.warm_seconds,
                            args.drain_seconds,
                        )  # fmt: skip
                    for name, *_ in order:
                        show_fanout(name, got[name])
                    bare_p99, gateway_p99 = got["bare"].p(0.99), got["gateway"].p(0.99)
                    log(f"   round {round_ + 1}: p99 ratio {fmt(gateway_p99 / bare_p99, 3)}")
                    rounds.append((got["bare"], got["gateway"]))
                figures.latency_rounds[compression] = rounds
                for name, _, _, _, publish, pid in servers:
                    result = await fleets[name].window(
                        publish, pid, THROUGHPUT_RATE, args.ws_seconds, args.warm_seconds,
                        args.drain_seconds,
                    )  # fmt: skip
                    figures.fanout[(compression, name, THROUGHPUT_RATE)] = result
                    show_fanout(name, result)
            finally:
                for fleet in fleets.values():
                    fleet.close()
            pipeline.assert_running()
    finally:
        await bus.close()


async def run_memory(
    args: argparse.Namespace, children: Children, pipeline: Pipeline, figures: Figures
) -> None:
    seconds = args.minutes * 60
    figures.memory_compression = args.ws_compression != "off"
    log(
        f"Memory: gateway RSS every {RSS_EVERY_S:g} s for {args.minutes:g} min, "
        f"{args.clients:,} subscribers ({mode_name(figures.memory_compression)}) at "
        f"{MEMORY_WS_RATE:.0f} msg/s, {RATE:.0f} requests/s (candles, positions in turn)"
    )
    pid = pipeline.processes["gateway"].pid
    subscribe = json.dumps({"op": "subscribe", "channels": [CHANNEL]})
    fleet = await asyncio.to_thread(
        ClientFleet,
        children,
        f"ws://127.0.0.1:{pipeline.gateway_port}/ws",
        args.clients,
        args.client_processes,
        pipeline.read_token,
        subscribe,
        figures.memory_compression,
    )
    bus = RedisBus(REDIS_URL)
    started = time.monotonic()

    async def sample() -> None:
        while True:
            figures.rss.append((time.monotonic() - started, rss_mb(pid)))
            await asyncio.sleep(RSS_EVERY_S)

    sampler = asyncio.create_task(sample())
    try:
        http = asyncio.create_task(
            open_loop(
                pipeline.gateway_port,
                [CANDLES_PATH, POSITIONS_PATH],
                pipeline.read_token,
                RATE,
                seconds,
                warm_s=0.0,
            )
        )
        figures.memory_ws = await fleet.window(
            gateway_publisher(bus), pid, MEMORY_WS_RATE, seconds - 0.5, 0.0, args.drain_seconds
        )
        figures.memory_http = await http
        figures.rss.append((time.monotonic() - started, rss_mb(pid)))
    finally:
        sampler.cancel()
        fleet.close()
        await bus.close()
    figures.memory_minutes = args.minutes
    pipeline.assert_running()
    step = round((60 if args.minutes >= 3 else 15) / RSS_EVERY_S)
    log(
        "  RSS (MB) at "
        + ", ".join(f"{t:.0f} s {mb:.1f}" for t, mb in figures.rss[::step] + figures.rss[-1:])
    )


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 3:
        return math.nan
    xs = [t / 60 for t, _ in samples]
    ys = [mb for _, mb in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def summary(figures: Figures) -> bool:
    """Print the figures against the targets; return whether every measured target passed."""
    ok = True
    log("\n== Gateway benchmark: figures and targets ==")
    if figures.rps:
        hello = statistics.median(figures.rps["hello"])
        log(f"HTTP, most requests/s (median of rounds): hello world {hello:,.0f}")
        for name, rounds in figures.rps.items():
            if name == "hello":
                continue
            ratios = [r / h for r, h in zip(rounds, figures.rps["hello"], strict=True)]
            ratio = statistics.median(ratios)
            line = (
                f"  {name:18s} {statistics.median(rounds):8,.0f} req/s  ratio {ratio:5.2f} "
                f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})"
            )
            if name in JUDGED:
                passed = ratio >= MIN_THROUGHPUT_RATIO
                ok &= passed
                line += f"  target >= {MIN_THROUGHPUT_RATIO:.2f}  {verdict(passed)}"
            log(line)
    if figures.paced:
        log(f"HTTP at {RATE:.0f} requests/s, latency from the scheduled send:")
        for name, result in figures.paced.items():
            p99 = result.p(0.99)
            line = f"  {name:18s} p50 {fmt(result.p(0.5), 2):>7s} ms  p99 {fmt(p99, 2):>7s} ms"
            if name in JUDGED:
                passed = p99 <= MAX_P99_MS
                ok &= passed
                line += f"  target <= {MAX_P99_MS:.0f} ms  {verdict(passed)}"
            log(line)
    for compression in (True, False):
        if (compression, "gateway", THROUGHPUT_RATE) not in figures.fanout:
            continue
        log(f"WebSocket fan-out, {mode_name(compression)} (latency from the due time):")
        latency_rounds = figures.latency_rounds[compression]
        for bare_round, gateway_round in latency_rounds:
            show_fanout("bare", bare_round)
            show_fanout("gateway", gateway_round)
        ratios = [gw.p(0.99) / bare.p(0.99) for bare, gw in latency_rounds]
        ratio = statistics.median(ratios)
        passed = ratio <= MAX_WS_P99_RATIO
        ok &= passed
        log(
            f"  {LATENCY_RATE:.0f} msg/s, p99 gateway / bare, median of {len(ratios)} rounds: "
            f"{fmt(ratio, 3)} (rounds {', '.join(fmt(r, 2) for r in ratios)})  "
            f"target <= {MAX_WS_P99_RATIO}  {verdict(passed)}"
        )
        fanout = {
            name: f
            for (c, name, rate), f in figures.fanout.items()
            if c == compression and rate == THROUGHPUT_RATE
        }
        for name, shown in fanout.items():
            show_fanout(name, shown)
        high_bare, high_gw = fanout["bare"], fanout["gateway"]
        bare_rate = high_bare.delivered_per_s
        ratio = high_gw.delivered_per_s / bare_rate if bare_rate else math.inf
        # Delivered is counted by arrival inside the window: when both servers deliver all
        # that is offered, jitter at the window's edges decides the third digit.
        tie = min(high_gw.kept_up, high_bare.kept_up) >= KEPT_UP
        passed = ratio >= MIN_WS_DELIVERY_RATIO or tie
        ok &= passed
        log(
            f"  100 msg/s, delivered: gateway {high_gw.delivered_per_s:,.0f} / bare "
            f"{high_bare.delivered_per_s:,.0f} msg/s = {fmt(ratio, 3)}"
            + (" (both delivered all offered: a tie)" if tie and ratio < 1 else "")
            + f"  target >= {MIN_WS_DELIVERY_RATIO:.1f}  {verdict(passed)}"
        )
    if figures.rss:
        middle = figures.rss[-1][0] / 2
        first = [mb for t, mb in figures.rss if t < middle]
        second = [(t, mb) for t, mb in figures.rss if t >= middle]
        slope = slope_mb_per_min(second)
        new_peak = max(mb for _, mb in second) - max(first)
        passed = slope <= MAX_RSS_SLOPE_MB_PER_MIN and new_peak <= MAX_RSS_NEW_PEAK_MB
        ok &= passed
        log(
            f"Memory over {figures.memory_minutes:g} min: RSS {figures.rss[0][1]:.1f} MB at the "
            f"start, max {max(first):.1f} MB in the first half, median "
            f"{statistics.median(mb for _, mb in second):.1f} MB and max "
            f"{max(mb for _, mb in second):.1f} MB in the second, {figures.rss[-1][1]:.1f} MB at "
            "the end"
        )
        log(
            f"  second half: slope {slope:+.2f} MB/min, peak {new_peak:+.1f} MB over the first "
            f"half's  target flat (< {MAX_RSS_SLOPE_MB_PER_MIN:g} MB/min, "
            f"< {MAX_RSS_NEW_PEAK_MB:g} MB)  {verdict(passed)}"
        )
        if figures.memory_http is not None and figures.memory_ws is not None:
            http, ws = figures.memory_http, figures.memory_ws
            log(
                f"  meanwhile: HTTP p50 {fmt(http.p(0.5), 2)} ms, p99 {fmt(http.p(0.99), 2)} ms, "
                f"{len(http.errors)} errors; WebSocket p50 {fmt(ws.p(0.5))} ms, p99 "
                f"{fmt(ws.p(0.99))} ms, {ws.on_time:.1%} delivered within "
                f"{ws.drain_s:g} s of the end"
            )
    return ok


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=None, help="memory run (default 10)")
    parser.add_argument("--quick", action="store_true", help="short phases, 1.5 min memory run")
    parser.add_argument("--only", choices=("http", "ws", "memory"), default=None)
    parser.add_argument("--rounds", type=int, default=None, help="wrk rounds (default 3)")
    parser.add_argument("--http-seconds", type=float, default=None, help="per wrk run (10)")
    parser.add_argument("--rate-seconds", type=float, default=None, help="per target (20)")
    parser.add_argument("--ws-seconds", type=float, default=None, help="per window (20)")
    parser.add_argument(
        "--ws-rounds", type=int, default=None, help="10 msg/s windows per server (default 3)"
    )
    parser.add_argument("--warm-seconds", type=float, default=2.0)
    parser.add_argument("--drain-seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--ws-compression",
        choices=("on", "off", "both"),
        default="both",
        help="WebSocket clients offer permessage-deflate (in the memory run: unless off)",
    )
    args = parser.parse_args()
    defaults = (
        {
            "minutes": 1.5,
            "rounds": 1,
            "http_seconds": 5,
            "rate_seconds": 8,
            "ws_seconds": 8,
            "ws_rounds": 1,
        }
        if args.quick
        else {
            "minutes": 10,
            "rounds": 3,
            "http_seconds": 10,
            "rate_seconds": 20,
            "ws_seconds": 20,
            "ws_rounds": 3,
        }
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    args = parse_args()
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        sys.exit("wrk not found: install it (Debian/Ubuntu: apt-get install -y wrk)")
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    load_1, load_5, _ = os.getloadavg()
    log(
        f"{os.cpu_count()} cores, load average {load_1:.2f} / {load_5:.2f}; fastapi "
        f"{version('fastapi')}, uvicorn {version('uvicorn')}, websockets {version('websockets')}"
    )
    figures = Figures()
    with only_run(), tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        candles, markets, what = asyncio.run(load(url))
        log(f"database: {candles:,} candles ({what}), {markets} positions")
        children = Children(Path(tmp))
        gateways = {
            name: Pipeline(
                redis_url=REDIS_URL,
                database_url=url,
                log_dir=Path(tmp) / name,
                env={**GATEWAY_ENV, **extra},
            )
            for name, extra in (("gateway", {}), ("uncached", {"CACHE_ENABLED": "false"}))
        }
        pipeline = gateways["gateway"]
        try:
            for name, gateway in gateways.items():
                if name == "gateway" or args.only in (None, "http"):
                    gateway.log_dir.mkdir()
                    gateway.start("gateway")
            hello_port, bare_port = free_port(), free_port()
            children.start("hello", "hello", "--port", str(hello_port))
            bare = children.start("broadcast", "broadcast", "--port", str(bare_port), pipes=True)
            read_line(bare, "listening", timeout_s=30)
            wait_until(
                lambda: _answers(f"http://127.0.0.1:{hello_port}/"),
                timeout_s=30,
                what="the hello-world app",
            )
            check_answers(pipeline, markets)
            targets = [Target("hello", hello_port, "/", pipeline.read_token)]
            for name, gateway in gateways.items():
                suffix = "" if name == "gateway" else ", no cache"
                targets += [
                    Target(
                        f"candles{suffix}", gateway.gateway_port, CANDLES_PATH, gateway.read_token
                    ),
                    Target(
                        f"positions{suffix}",
                        gateway.gateway_port,
                        POSITIONS_PATH,
                        gateway.read_token,
                    ),
                ]
            if args.only in (None, "http"):
                run_http(args, targets, figures)
                for gateway in gateways.values():
                    gateway.assert_running()
                gateways["uncached"].stop()
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                if args.only in (None, "ws"):
                    runner.run(run_ws(args, children, bare, bare_port, pipeline, figures))
                if args.only in (None, "memory"):
                    runner.run(run_memory(args, children, pipeline, figures))
        except BaseException:
            for name, gateway in gateways.items():
                path = gateway.log_dir / "gateway.log"
                if path.exists() and (tail := path.read_text()[-3000:]):
                    log(f"--- {name} log (tail) ---\n{tail}")
            raise
        finally:
            children.stop_all()
            for gateway in gateways.values():
                gateway.stop()
    summary(figures)
    load_1, load_5, _ = os.getloadavg()
    log(f"load average at the end {load_1:.2f} / {load_5:.2f}")


def check_answers(pipeline: Pipeline, markets: int) -> None:
    """Fail unless the gateway answers both reads with what was loaded."""
    base = f"http://127.0.0.1:{pipeline.gateway_port}"
    status, body = get(base + CANDLES_PATH, pipeline.read_token)
    rows = json.loads(body)
    times = [row["open_time_ms"] for row in rows]
    if (
        status != 200
        or len(rows) != LATEST
        or rows[0]["symbol"] != SYMBOL
        or times != sorted(times)
    ):
        raise RuntimeError(f"unexpected candles answer: {status}, {len(rows)} rows")
    status, positions_body = get(base + POSITIONS_PATH, pipeline.read_token)
    if status != 200 or len(json.loads(positions_body)) != markets:
        raise RuntimeError(f"unexpected positions answer: {status}, {positions_body[:200]!r}")
    log(
        f"answers checked: {LATEST:,} candles in {len(body):,} bytes, {markets} positions in "
        f"{len(positions_body):,} bytes"
    )


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
