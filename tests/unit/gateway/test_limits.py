"""Rate limits (GCRA budgets, 429 with Retry-After) and the request body limit (413)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from services.gateway.auth import TokenRegistry
from services.gateway.body_limit import BodySizeLimitMiddleware
from services.gateway.ratelimit import RateLimiter, RateLimitMiddleware

TOKEN = "a-token-of-the-limit-tests-0123456789"
OTHER = "another-token-of-the-limit-tests-0123"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_burst_at_once_then_the_sustained_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)

    assert [limiter.wait_s("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s("a") == pytest.approx(0.5)  # one request frees up every 0.5 s
    assert limiter.wait_s("b") == 0.0  # budgets are per client
    clock.now += 0.5
    assert limiter.wait_s("a") == 0.0
    assert limiter.wait_s("a") == pytest.approx(0.5)
    clock.now += 10  # idle: the budget is full again, and no fuller
    assert [limiter.wait_s("a") for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)]


def test_a_refused_request_spends_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=clock)
    limiter.wait_s("a")

    for _ in range(100):
        assert limiter.wait_s("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.wait_s("a") == 0.0


def test_the_budgets_kept_are_bounded() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_clients=10, clock=Clock())

    for client in range(1_000):
        limiter.wait_s(f"address:{client}")

    assert len(limiter) == 10


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_limiter_needs_a_positive_rate_and_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate_per_s > 0 and burst >= 1"):
        RateLimiter(rate_per_s=rate, burst=burst)


def limited_app(clock: Clock) -> FastAPI:
    app = FastAPI()

    @app.get("/read")
    async def read() -> str:
        return "ok"

    @app.get("/health")
    async def health() -> str:
        return "ok"

    app.add_middleware(
        RateLimitMiddleware,
        limiter=RateLimiter(rate_per_s=1.0, burst=2, clock=clock),
        tokens=TokenRegistry(read=[TOKEN, OTHER], admin=[]),
        exempt_paths=["/health"],
    )
    return app


def test_over_budget_is_429_with_retry_after_in_whole_seconds() -> None:
    clock = Clock()
    client = TestClient(limited_app(clock), headers={"Authorization": f"Bearer {TOKEN}"})

    codes = [client.get("/read").status_code for _ in range(3)]
    refused = client.get("/read")
    clock.now += 1.0

    assert codes == [200, 200, 429]
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {"detail": "rate limit exceeded: retry after 1 s"}
    assert client.get("/read").status_code == 200
    assert [client.get("/health").status_code for _ in range(10)] == [200] * 10  # exempt


def test_each_known_token_has_its_own_budget_and_unknown_ones_share_the_address() -> None:
    client = TestClient(limited_app(Clock()))

    def spend(token: str) -> list[int]:
        headers = {"Authorization": f"Bearer {token}"}
        return [client.get("/read", headers=headers).status_code for _ in range(3)]

    assert spend(TOKEN) == [200, 200, 429]
    assert spend(OTHER) == [200, 200, 429]
    # Made-up tokens buy no fresh budget: they all count against the address.
    assert spend("made-up-1") + spend("made-up-2") == [200, 200, 429, 429, 429, 429]


def sized_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> int:
        return len(await request.body())

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=1_000)
    return app


def test_bodies_up_to_the_limit_pass_and_larger_ones_are_413() -> None:
    client = TestClient(sized_app())

    assert client.post("/echo", content=b"x" * 1_000).json() == 1_000
    declared = client.post("/echo", content=b"x" * 1_001)
    assert declared.status_code == 413
    assert declared.json() == {"detail": "request body larger than 1000 bytes"}


def test_a_streamed_body_is_cut_off_at_the_limit() -> None:
    client = TestClient(sized_app())

    def chunks() -> object:
        for _ in range(10):
            yield b"y" * 300

    response = client.post("/echo", content=chunks())  # no Content-Length: chunked

    assert response.status_code == 413
