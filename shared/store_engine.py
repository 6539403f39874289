"""The engine factory: a Postgres or SQLite URL in, a pooled Engine that reports its pool out."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import QueuePool

from shared import metrics

_SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_recycle_s: int = 1800,
    pool_timeout_s: float = 30.0,
) -> Engine:
    """Build a pooled engine for a Postgres (psycopg2) or SQLite file URL."""
    parsed = make_url(url)
    pool_options: dict[str, Any] = {
        "poolclass": QueuePool,
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout_s,
        "pool_recycle": pool_recycle_s,
    }
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        engine = sa.create_engine(parsed, pool_pre_ping=True, **pool_options)
    elif backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file database: every pooled connection must see it")
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000},
            **pool_options,
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    else:
        raise ValueError(f"unsupported database {backend!r}: use postgresql or sqlite")
    pool = engine.pool
    if isinstance(pool, QueuePool):
        event.listen(engine, "checkout", lambda *_: _observe_checkout(pool))
        event.listen(engine, "checkin", lambda *_: _observe_checkin(pool))
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: object) -> None:
    # The driver's own implicit BEGIN skips SELECTs and fights SQLAlchemy's transactions:
    # turn it off and let the "begin" event below open every transaction explicitly.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers run while one writer commits; the busy timeout makes writers queue.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_sqlite(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def _observe_checkout(pool: QueuePool) -> None:
    metrics.DB_POOL_CHECKED_OUT.set(pool.checkedout())
    # QueuePool counts overflow from -pool_size; only the part above zero is extra connections.
    metrics.DB_POOL_OVERFLOW.set(max(pool.overflow(), 0))


def _observe_checkin(pool: QueuePool) -> None:
    # The event fires just before the pool takes the connection back, so count it as returned;
    # a connection returned to a full pool is closed, which ends one overflow connection.
    closes = 1 if pool.checkedin() >= pool.size() else 0
    metrics.DB_POOL_CHECKED_OUT.set(pool.checkedout() - 1)
    metrics.DB_POOL_OVERFLOW.set(max(pool.overflow() - closes, 0))
