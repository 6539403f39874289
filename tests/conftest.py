"""Fixtures shared by every test layer: real market data, a real Redis, a fresh Postgres."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "ohlcv"

REDIS_BASE = os.environ.get("CANDLEBUS_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("CANDLEBUS_TEST_REDIS_DB", "15"))
PG_ADMIN_URL = os.environ.get(
    "CANDLEBUS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def ohlcv_path(name: str) -> Path:
    """Return the path of a real candle file from the team data folder, or skip the test."""
    path = DATA_DIR / name
    if not path.exists():
        pytest.skip(f"real market data {name} not found: expected the team folder at {DATA_DIR}")
    return path


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database, emptied before and after the test."""
    import redis

    url = f"{REDIS_BASE}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_BASE}: {exc} (start it, see README)")
    yield url
    client.flushdb()
    client.close()


def _admin_execute(sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"Postgres is not reachable at {PG_ADMIN_URL}: {exc} (start it, see README)")
    finally:
        engine.dispose()


def _database_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A new, empty Postgres database (no schema), dropped after the test."""
    name = f"cbtest_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    yield _database_url(name)
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A new Postgres database migrated to the latest schema, dropped after the test."""
    from shared.store import upgrade

    upgrade(empty_database_url)
    return empty_database_url
