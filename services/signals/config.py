"""Strategy parameters (I/O edge): a JSON or TOML file, or parameters set through the API (a
row in the store), in -> BandsParams out. Both are read again while the service runs (the file
when it changes, the store at most once a second), so a change takes effect on the next candle
without a restart; the latest change from either wins, and the API's, once set, wins at start."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import tomllib
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, get_args

from services.signals.strategy import BandsParams, KLine
from shared.store import Store

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A parameters file that cannot be used; the message says what is wrong."""


def parse_params(data: Any, *, source: str) -> BandsParams:
    """Validate a mapping of parameters into BandsParams (unknown keys and bad values refused)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of parameters, got {type(data).__name__}")
    known = {f.name for f in fields(BandsParams)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown parameters {unknown}; known: {sorted(known)}")
    if "line" in data and data["line"] not in get_args(KLine):
        raise ConfigError(f"{source}: line must be one of {list(get_args(KLine))}")
    for name in ("buy", "sell"):
        if name in data and not isinstance(data[name], bool):
            raise ConfigError(f"{source}: {name} must be true or false")
    return BandsParams(**data)


def read_params(path: Path) -> BandsParams:
    """Read a parameters file (.toml, else JSON)."""
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    return parse_params(data, source=str(path))


class ParamsFile:
    """A parameters file watched by its modification time and size (one stat per check)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None

    def load(self) -> BandsParams:
        """Read the file at start (defaults without one); a bad file is an error at start."""
        if self.path is None:
            return BandsParams()
        self._seen = self._stamp()
        params = read_params(self.path)
        log.info("strategy parameters from %s: %s", self.path, asdict(params))
        return params

    def changed(self, current: BandsParams) -> BandsParams | None:
        """Return the new parameters if the file changed and is valid; a bad edit is logged
        and the current parameters stay in force."""
        if self.path is None:
            return None
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp
        try:
            params = read_params(self.path)
        except (ConfigError, OSError) as error:
            log.error("strategy parameters not changed, the file is not usable: %s", error)
            return None
        if params == current:
            return None
        log.info("strategy parameters changed: %s -> %s", asdict(current), asdict(params))
        return params

    def _stamp(self) -> tuple[int, int]:
        assert self.path is not None
        try:
            status = os.stat(self.path)
        except OSError:
            return (-1, -1)
        return (status.st_mtime_ns, status.st_size)


class StoredParams:
    """Parameters set through the API: the strategy's row in the store, read at most once a
    second; a row that does not parse is logged and the current parameters stay in force."""

    def __init__(self, store: Store, strategy: str, *, every_s: float = 1.0) -> None:
        self._store, self._strategy, self._every_s = store, strategy, every_s
        self._read_at = -math.inf
        self._seen: int | None = None  # updated_at_ms of the row last read

    async def changed(self, current: BandsParams) -> BandsParams | None:
        """Return the stored parameters if they changed since the last read and differ."""
        now = time.monotonic()
        if now - self._read_at < self._every_s:
            return None
        self._read_at = now
        row = await self._store.strategy_params(self._strategy)
        if row is None or row.updated_at_ms == self._seen:
            return None
        self._seen = row.updated_at_ms
        try:
            params = parse_params(json.loads(row.params), source="stored strategy parameters")
        except (ConfigError, ValueError, TypeError) as error:
            log.error("strategy parameters not changed, the stored ones are not usable: %s", error)
            return None
        if params == current:
            return None
        why = f" ({row.reason})" if row.reason else ""
        log.info(
            "strategy parameters changed through the API%s: %s -> %s",
            why, asdict(current), asdict(params),
        )  # fmt: skip
        return params
