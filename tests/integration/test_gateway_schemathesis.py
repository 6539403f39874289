"""Schemathesis against the gateway's own OpenAPI document, over real sockets, Redis and Postgres
with real candles stored: no 5xx, no answer outside the schema, and no protected route that
answers without a token (401) or to a read token where admin is needed (403)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.bus import RedisBus
from shared.store import Store, TraderStateRow, TradingStep, create_engine
from tests.fakes import fill, indicators_for, order, position, real_candles, signal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

READ_TOKEN = "read-token-of-the-schemathesis-run-0001"
ADMIN_TOKEN = "admin-token-of-the-schemathesis-run-0002"
EXAMPLES = 25  # per operation and generation mode: about 1,000 requests in all
# Each accepted backtest runs one (over 2,000 candles): keep their number small.
FEWER_EXAMPLES = {"POST /api/v1/backtests": 8}
PUBLIC = {"/health", "/ready"}


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def serving_in_a_thread(redis_url: str, database_url: str) -> Iterator[str]:
    """Serve the gateway from its own thread and event loop (schemathesis calls block)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    ready, failures = threading.Event(), []
    box: dict[str, Any] = {}

    async def serve() -> None:
        bus, store = RedisBus(redis_url), Store(create_engine(database_url))
        app_settings = GatewaySettings(
            _env_file=None, redis_url=redis_url, database_url=database_url, block_ms=100,
            api_tokens_read=READ_TOKEN, api_tokens_admin=ADMIN_TOKEN, rate_limit_per_s=0,
        )  # fmt: skip
        app = create_app(app_settings, bus=bus, store=store, on_relay_failure=failures.append)
        server = box["server"] = _Server(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        )
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        ready.set()
        try:
            await task
        finally:
            await bus.close()
            await store.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(30), "the gateway did not start"
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        box["server"].should_exit = True
        thread.join(30)
        listener.close()
    assert failures == []


@pytest.fixture
def gateway(redis_url: str, database_url: str) -> Iterator[str]:
    """A gateway over a database holding real candles and a little of everything else."""
    candles = real_candles(2_000)

    async def load() -> None:
        store = Store(create_engine(database_url))
        try:
            await store.save_candles(candles)
            await store.save_indicators(indicators_for(candles[-300:]))
            await store.save_signals([signal()])
            await store.record_execution(order=order(), fill=fill(), position=position())
            state = TraderStateRow("paper", json.dumps({"initial_equity": 10_000.0}), "0-0", 1)
            await store.save_trading_step(
                TradingStep(orders=(), fills=(), positions=(), decisions=(), state=state)
            )
        finally:
            await store.close()

    asyncio.run(load())
    with serving_in_a_thread(redis_url, database_url) as base_url:
        yield base_url


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def exercise(operation: Any, mode: GenerationMode, examples: int, headers: dict[str, str]) -> None:
    """Run `examples` generated cases of one operation through the checks that fit the mode."""
    # Valid input: every check (status codes, content types, headers, bodies, auth) but one:
    # that every schema-valid request is accepted. Some rules cannot be written in OpenAPI (a
    # cursor must be one the API issued, start_ms <= end_ms, a backtest's settings must make
    # sense), and those requests are rightly refused with 422. Invalid input must be refused
    # with a 4xx, and never crash the server.
    checks = None if mode is GenerationMode.POSITIVE else [not_a_server_error]
    excluded = [positive_data_acceptance] if mode is GenerationMode.POSITIVE else None

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=checks, excluded_checks=excluded)

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # an operation without inputs has no invalid ones; every one has valid ones


def test_schemathesis_finds_no_server_error_and_no_schema_violation(gateway: str) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway}/openapi.json")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tested, failures = [], {}
    for operation in operations(schema):
        examples = FEWER_EXAMPLES.get(operation.label, EXAMPLES)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                exercise(operation, mode, examples, admin)
            except (Exception, FailureGroup) as error:  # run every operation, report every finding
                failures[f"{operation.label} ({mode.value})"] = str(error)
        tested.append(operation.label)

    found = "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert not failures, f"failing operations: {sorted(failures)}\n\n{found}"
    assert len(tested) >= 16, tested  # every REST resource, operations and controls


def test_every_protected_operation_refuses_a_missing_token_and_a_too_weak_one(
    gateway: str,
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway}/openapi.json")
    answers: dict[str, tuple[int, int, int]] = {}
    with httpx.Client(base_url=gateway) as http:
        for operation in operations(schema):
            if operation.path in PUBLIC:
                continue
            path = operation.path.replace("{job_id}", "0" * 32)
            none = http.request(operation.method, path).status_code
            unknown = http.request(
                operation.method, path, headers={"Authorization": "Bearer not-a-known-token"}
            ).status_code
            read = http.request(
                operation.method, path, headers={"Authorization": f"Bearer {READ_TOKEN}"}
            ).status_code
            answers[operation.label] = (none, unknown, read)
            declared = operation.definition.raw.get("security")
            assert declared == [{"APIToken": []}], f"{operation.label} declares no token"

    assert answers and all(none == unknown == 401 for none, unknown, _ in answers.values())
    # A read token reads; where it is refused, it is with 403 (the admin role is needed).
    changes = {label for label in answers if not label.startswith("GET ")}
    for label, (_, _, read) in answers.items():
        assert read != 401, label
        if label in changes and label != "POST /api/v1/backtests":
            assert read == 403, (label, read)
