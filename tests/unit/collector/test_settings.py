"""CollectorSettings from the environment, and the source they build."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.collector.settings import CollectorSettings
from services.collector.sources import ReplaySource, SyntheticSource, source_from_settings
from tests.conftest import ohlcv_path


def test_replay_files_parse_from_a_comma_separated_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eth, xmr = ohlcv_path("ETH_BTC-1m.json"), ohlcv_path("XMR_BTC-1m.json")
    monkeypatch.setenv("SOURCE", "replay")
    monkeypatch.setenv("REPLAY_FILES", f"{eth}, {xmr},")
    monkeypatch.setenv("REPLAY_SPEED", "60")

    settings = CollectorSettings()

    assert settings.replay_files == [eth, xmr]
    assert settings.replay_speed == 60.0


def test_missing_replay_file_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "ETH_BTC-1m.json"
    monkeypatch.setenv("REPLAY_FILES", str(missing))

    with pytest.raises(ValidationError, match="replay files not found: " + re.escape(str(missing))):
        CollectorSettings()


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"SOURCE": "replay"}, "source=replay needs REPLAY_FILES"),
        ({"SOURCE": "kafka"}, "'replay', 'synthetic' or 'exchange'"),
        ({"SYMBOLS": "BTCUSDT"}, "ccxt unified symbols like BTC/USDT"),
        ({"TIMEFRAMES": "1m,7m"}, "unknown timeframe '7m'"),
        ({"SYMBOL_CALENDARS": "AAPL/USD"}, "AAPL/USD=XNYS"),
        ({"REPLAY_SPEED": "-1"}, "greater than or equal to 0"),
        ({"CANDLE_INTERVAL_S": "-0.5"}, "greater than or equal to 0"),
        ({"SYNTHETIC_SYMBOLS": "0"}, "greater than or equal to 1"),
        ({"TIMEFRAME": "7m"}, "unknown timeframe '7m'"),
    ],
)
def test_bad_values_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=message):
        CollectorSettings()


def test_default_settings_build_the_synthetic_market() -> None:
    source = source_from_settings(CollectorSettings(synthetic_symbols=3, timeframe="5m"))

    assert isinstance(source, SyntheticSource)
    assert source.markets() == [
        ("synthetic", "SYN0/USD", "5m"),
        ("synthetic", "SYN1/USD", "5m"),
        ("synthetic", "SYN2/USD", "5m"),
    ]


def test_replay_settings_build_a_replay_of_the_files() -> None:
    eth = ohlcv_path("ETH_BTC-1m.json")
    settings = CollectorSettings(source="replay", replay_files=[eth], exchange="kraken")

    source = source_from_settings(settings)

    assert isinstance(source, ReplaySource)
    assert source.markets() == [("kraken", "ETH/BTC", "1m")]
