"""The other processes of the gateway benchmark: its two yardsticks and its WebSocket clients.

    python benchmarks/gateway_peers.py hello --port N
        a bare FastAPI "hello world" under uvicorn, one worker, the gateway's uvicorn options
        (uvloop, httptools, uvicorn's default WebSocket protocol, no access log);
    python benchmarks/gateway_peers.py broadcast --port N
        a bare `websockets` server that sends every message to every client with `broadcast()`,
        fed by its own publisher loop; stdin `publish <rate> <start_ms> <end_ms>` runs the loop
        and answers `published <n>`;
    python benchmarks/gateway_peers.py clients --url ws://... --connections 500
        WebSocket clients on the `websockets` Sans-I/O protocol; prints
        `ready <n>` once every connection is open (and subscribed, with --subscribe); offers
        permessage-deflate only with --compression; stdin
        `measure <start_ms> <end_ms>` starts a measurement window, `report` prints its figures as
        one JSON line, `quit` (or end of input) closes the connections.

Every message carries the time it was due to be sent in `closed_at_ms` (the publishers send
at whole milliseconds); a client takes its delivery latency from that, on the shared clock.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import msgspec
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.messages import CandleClosed, to_builtins  # noqa: E402

DATA_FILE = ROOT.parent / "shared" / "data" / "ohlcv" / "ETH_BTC-1m.json"
SYMBOL = "ETH/BTC"
CHANNEL = f"candles:{SYMBOL}"
# Every event frame of both servers carries this field once per event, batched or not.
SENT_FIELD = re.compile(rb'"closed_at_ms":(\d+)')
LATENCY_BINS_PER_MS = 10  # histogram resolution: 0.1 ms

_json = msgspec.json.Encoder()


# -- the messages both servers send ------------------------------------------------------------


def ohlcv_rows() -> tuple[list[list[float]], str]:
    """Return the real ETH/BTC 1m rows and where they came from (a seeded walk without them)."""
    if DATA_FILE.exists():
        return json.loads(DATA_FILE.read_text()), f"real {DATA_FILE.name}"
    rows: list[list[float]] = []
    price, state = 0.09, 12345
    for i in range(14_400):
        state = (1103515245 * state + 12345) % 2**31
        step = (state / 2**31 - 0.5) * 0.002
        close = price * (1 + step)
        rows.append(
            [1_516_423_980_000 + 60_000 * i, price, max(price, close), min(price, close), close, 50]
        )
        price = close
    return rows, "a seeded random walk (no real data folder)"


def candle_at(rows: list[list[float]], number: int, due_ms: int) -> CandleClosed:
    """Return the `number`-th candle published (cycling through the rows), due at `due_ms`."""
    ms, o, h, low, c, v = rows[number % len(rows)]
    return CandleClosed(
        exchange="binance",
        symbol=SYMBOL,
        timeframe="1m",
        open_time_ms=int(ms),
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
        source="replay",
        closed_at_ms=due_ms,
    )


def event_frame(message: CandleClosed, entry_id: str) -> bytes:
    """Return the frame the gateway sends for one candle, byte for byte in its layout."""
    return _json.encode(
        {
            "type": "event",
            "channel": CHANNEL,
            "stream": "candles",
            "id": entry_id,
            "data": to_builtins(message),
        }
    )


async def paced(
    rate: float, start_ms: int, end_ms: int, send: Callable[[int, int], Awaitable[None]]
) -> int:
    """Call `send(number, due_ms)` at `rate` per second on whole milliseconds from `start_ms`
    until `end_ms`, never skipping one when late (open loop); return how many were sent."""
    step_ms = 1000.0 / rate
    number = 0
    while (due_ms := start_ms + round(number * step_ms)) < end_ms:
        delay = due_ms / 1000 - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
            # The event loop's timers have millisecond resolution: never send before the time.
            early = due_ms / 1000 - time.time()
            if early > 0:
                time.sleep(early)
        else:
            await asyncio.sleep(0)  # behind: still let the loop run its I/O between messages
        await send(number, due_ms)
        number += 1
    return number


async def stdin_lines() -> asyncio.StreamReader:
    """Return a reader of this process's stdin on the running loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- hello world --------------------------------------------------------------------------------


def hello(port: int) -> None:
    """Serve the bare FastAPI hello world until SIGTERM."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"message": "hello world"}

    # The gateway's options: uvloop (its runtime's loop), httptools (uvicorn's choice when it is
    # installed), the Sans-I/O websockets protocol, no access log, one worker.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        log_config=None,
        access_log=False,
        ws_ping_interval=20.0,
    )
    uvicorn.Server(config).run()


# -- bare broadcast server ------------------------------------------------------------------------


async def broadcast_server(port: int) -> None:
    """Serve WebSocket clients; broadcast the publisher loop's messages to all of them."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: set[ServerConnection] = set()
    rows, _ = ohlcv_rows()

    async def handler(connection: ServerConnection) -> None:
        clients.add(connection)
        try:
            async for _ in connection:
                pass
        finally:
            clients.discard(connection)

    async def send(number: int, due_ms: int) -> None:
        frame = event_frame(candle_at(rows, number, due_ms), f"{due_ms}-0")
        broadcast(clients, frame, text=True)

    # The defaults, as a deployment would use them; compression is off since clients offer none.
    async with serve(handler, "127.0.0.1", port, backlog=2048, max_size=2**16):
        say("listening")
        commands = await stdin_lines()
        while line := await commands.readline():
            words = line.decode().split()
            if words and words[0] == "publish":
                rate, start_ms, end_ms = float(words[1]), int(words[2]), int(words[3])
                say(f"published {await paced(rate, start_ms, end_ms, send)}")
            elif words and words[0] == "count":
                say(f"clients {len(clients)}")


# -- clients ----------------------------------------------------------------------------------


class Tally:
    """What one client process received in the current measurement window."""

    def __init__(self) -> None:
        self.reset(0, 0)

    def reset(self, start_ms: int, end_ms: int) -> None:
        self.start_ms, self.end_ms = start_ms, end_ms
        self.frames = 0
        self.events = 0  # every event received since the reset
        self.in_window = 0  # events received while the window was open
        self.latency: Counter[int] = Counter()  # events sent in the window, by latency bin
        self.cpu_start = cpu_seconds()

    def frame(self, data: bytes | bytearray | memoryview, now_ms: float) -> None:
        sent = SENT_FIELD.findall(bytes(data))
        self.frames += 1
        self.events += len(sent)
        if self.start_ms <= now_ms < self.end_ms:
            self.in_window += len(sent)
        for text in sent:
            due_ms = int(text)
            if self.start_ms <= due_ms < self.end_ms:
                self.latency[max(0, int((now_ms - due_ms) * LATENCY_BINS_PER_MS))] += 1

    def report(self, open_connections: int) -> dict[str, Any]:
        return {
            "open": open_connections,
            "frames": self.frames,
            "events": self.events,
            "in_window": self.in_window,
            "latency": sorted(self.latency.items()),
            "cpu_s": cpu_seconds() - self.cpu_start,
        }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Client(asyncio.Protocol):
    """One WebSocket connection, driven by the `websockets` Sans-I/O client protocol."""

    def __init__(
        self,
        url: str,
        headers: list[tuple[str, str]],
        subscribe: bytes | None,
        tally: Tally,
        compression: bool,
    ) -> None:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
        from websockets.uri import parse_uri

        # permessage-deflate offered only when asked for, with the library's client defaults.
        extensions = enable_client_permessage_deflate(None) if compression else None
        self.protocol = ClientProtocol(parse_uri(url), extensions=extensions, max_size=None)
        self.headers = headers
        self.subscribe = subscribe
        self.tally = tally
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.open = False
        self.partial: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = self.protocol.connect()
        for name, value in self.headers:
            request.headers[name] = value
        self.protocol.send_request(request)
        self.flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        now_ms = time.time() * 1000
        for event in events:
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY:
                    if event.fin:
                        self.received(event.data, now_ms)
                    else:
                        self.partial = [bytes(event.data)]
                elif event.opcode is Opcode.CONT:
                    self.partial.append(bytes(event.data))
                    if event.fin:
                        self.received(b"".join(self.partial), now_ms)
                        self.partial = []
            elif isinstance(event, Response):
                if protocol.handshake_exc is not None:
                    self.fail(protocol.handshake_exc)
                    return
                self.open = True
                if self.subscribe is None:
                    self.done()
                else:
                    protocol.send_text(self.subscribe)
        self.flush()

    def received(self, data: bytes | bytearray | memoryview, now_ms: float) -> None:
        if not self.ready.done() and b'"subscribed"' in data:
            self.done()
        elif not self.ready.done() and b'"error"' in data:
            self.fail(RuntimeError(bytes(data).decode()))
        else:
            self.tally.frame(data, now_ms)

    def flush(self) -> None:
        assert self.transport is not None
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.protocol.close_expected():
            self.transport.close()

    def done(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def fail(self, error: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.fail(ConnectionError(f"connection lost before it was ready: {exc!r}"))

    def close(self) -> None:
        if self.open and self.transport is not None:
            self.protocol.send_close(1000)
            self.flush()


def _factory(client: Client) -> Callable[[], Client]:
    return lambda: client


async def clients(
    url: str, connections: int, token: str | None, subscribe: str | None, compression: bool
) -> None:
    """Open `connections` clients, report readiness, then follow stdin's commands."""
    from urllib.parse import urlsplit

    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = [("Authorization", f"Bearer {token}")] if token else []
    request = subscribe.encode() if subscribe else None
    tally = Tally()
    opened: list[Client] = []
    # A few at a time: a burst of 500 handshakes would overflow the servers' accept queues.
    for first in range(0, connections, 50):
        count = min(50, connections - first)
        batch = [Client(url, headers, request, tally, compression) for _ in range(count)]
        await asyncio.gather(*(loop.create_connection(_factory(c), host, port) for c in batch))
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in batch)), timeout=60)
        opened += batch
    gc.freeze()
    say(f"ready {len(opened)}")
    commands = await stdin_lines()
    while line := await commands.readline():
        words = line.decode().split()
        if words and words[0] == "measure":
            tally.reset(int(words[1]), int(words[2]))
        elif words and words[0] == "report":
            say(json.dumps(tally.report(sum(c.open for c in opened))))
        elif words and words[0] == "quit":
            break
    for client in opened:
        client.close()
    await asyncio.sleep(0.2)


# -- figures from the clients' reports ------------------------------------------------------------


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the client processes' reports into one."""
    latency: Counter[int] = Counter()
    for report in reports:
        latency.update({int(k): int(v) for k, v in report["latency"]})
    return {
        "open": sum(r["open"] for r in reports),
        "frames": sum(r["frames"] for r in reports),
        "events": sum(r["events"] for r in reports),
        "in_window": sum(r["in_window"] for r in reports),
        "latency": latency,
        "cpu_s": [r["cpu_s"] for r in reports],
    }


def histogram_percentile(latency: Counter[int], expected: int, q: float) -> float:
    """Return the q-quantile in ms of `expected` deliveries; undelivered ones count as infinite."""
    rank = math.ceil(q * expected)
    seen = 0
    for bin_, count in sorted(latency.items()):
        seen += count
        if seen >= rank:
            return (bin_ + 0.5) / LATENCY_BINS_PER_MS
    return math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("hello", "broadcast", "clients"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url", default="")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--token", default=None)
    parser.add_argument("--subscribe", default=None, help="JSON request sent after the handshake")
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args()
    if args.role == "hello":
        hello(args.port)
        return
    gc.set_threshold(50_000, 20, 20)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if args.role == "broadcast":
            runner.run(broadcast_server(args.port))
        else:
            runner.run(
                clients(args.url, args.connections, args.token, args.subscribe, args.compression)
            )


if __name__ == "__main__":
    main()
