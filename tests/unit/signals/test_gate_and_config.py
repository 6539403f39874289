"""Skipping unchanged inputs never misses a signal; parameters reload from their file."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import msgspec
import numpy as np
import pytest

from services.indicators.engine import IndicatorParams, compute_frame
from services.signals.config import ConfigError, ParamsFile, read_params
from services.signals.gate import ChangeGate
from services.signals.strategy import BandsParams, StochRsiBands
from shared.messages import IndicatorsComputed
from tests.conftest import ohlcv_path

FILES = ["ETH_BTC-1m.json", "XMR_BTC-1m.json", "ADA_BTC-1m.json", "ZEC_BTC-5m.json"]


def messages_of(name: str) -> list[IndicatorsComputed]:
    rows = np.array(json.loads(ohlcv_path(name).read_text()), dtype=float)
    timeframe_ms = int(np.median(np.diff(rows[:, 0])))
    frame = compute_frame(
        rows[:, 0].astype(np.int64), rows[:, 2], rows[:, 3], rows[:, 4],
        timeframe_ms=timeframe_ms, params=IndicatorParams(),
    )  # fmt: skip
    names = ("rsi", "stoch_k", "stoch_d", "stochrsi_fastk", "stochrsi_fastd", "atr",
             "volatility_ratio", "band_lower", "band_upper", "prev_stoch_k", "prev_band_lower",
             "prev_band_upper")  # fmt: skip
    columns = {n: frame[n].tolist() for n in names}
    return [
        IndicatorsComputed(
            exchange="binance",
            symbol=name.split("-")[0].replace("_", "/"),
            timeframe="1m",
            open_time_ms=int(t),
            close=float(c),
            candle_closed_at_ms=0,
            **{n: columns[n][i] for n in names},
        )
        for i, (t, c) in enumerate(zip(frame["open_time_ms"], frame["close"], strict=True))
    ]


@pytest.mark.parametrize("name", FILES)
def test_the_default_gate_skips_unchanged_inputs_and_misses_no_signal(name: str) -> None:
    messages = messages_of(name)
    strategy, gate = StochRsiBands(), ChangeGate()

    everything = [s for m in messages if (s := strategy.evaluate(m)) is not None]
    gated = [
        s
        for m in messages
        if gate.admit(m, strategy.inputs(m)) and (s := strategy.evaluate(m)) is not None
    ]

    assert gated == everything and len(everything) > 10
    if name.startswith("XMR"):  # illiquid: K pinned and bands clamped in quiet stretches
        assert gate.skipped > 0


def test_a_flat_stretch_is_evaluated_once() -> None:
    (first,) = messages_of("ETH_BTC-1m.json")[500:501]
    flat = msgspec.structs.replace(first, prev_stoch_k=first.stoch_k,
                                   prev_band_lower=first.band_lower,
                                   prev_band_upper=first.band_upper)  # fmt: skip
    gate = ChangeGate()
    admitted = [gate.admit(msgspec.structs.replace(flat, open_time_ms=t)) for t in range(5)]
    assert admitted == [True, False, False, False, False]
    assert gate.skipped == 4


def test_a_minimum_price_move_skips_more_and_can_miss_crossings() -> None:
    messages = messages_of("ETH_BTC-1m.json")
    strategy = StochRsiBands()
    everything = [s for m in messages if (s := strategy.evaluate(m)) is not None]
    gate = ChangeGate(min_price_move_pct=0.2)
    gated = [s for m in messages if gate.admit(m) and (s := strategy.evaluate(m)) is not None]
    assert gate.skipped > len(messages) // 2
    assert len(gated) < len(everything)  # why it is off by default


def test_parameters_file_changes_take_effect_and_bad_edits_keep_the_old_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "strategy.toml"
    path.write_text('line = "stoch_k"\nsell = true\n')
    watched = ParamsFile(path)
    params = watched.load()
    assert params == BandsParams()
    assert watched.changed(params) is None  # untouched: one stat, nothing read

    path.write_text('line = "stoch_d"\nsell = false\n')
    os.utime(path, ns=(1, 10**18))  # a new modification time, whatever the clock's grain
    with caplog.at_level(logging.INFO):
        new = watched.changed(params)
    assert new == BandsParams(line="stoch_d", sell=False)
    assert "strategy parameters changed" in caplog.text

    path.write_text('line = "macd"\n')
    os.utime(path, ns=(1, 2 * 10**18))
    with caplog.at_level(logging.ERROR):
        assert watched.changed(new) is None
    assert "line must be one of" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"lines": "stoch_k"}', "unknown parameters ['lines']"),
        ('{"buy": "yes"}', "buy must be true or false"),
        ("{not json", "strategy.json"),
    ],
)
def test_bad_parameter_files_are_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "strategy.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_params(path)


def test_another_line_crosses_using_the_previous_message_from_history() -> None:
    messages = messages_of("ETH_BTC-1m.json")
    strategy = StochRsiBands(BandsParams(line="stoch_d"))
    live = [
        s for i, m in enumerate(messages) if (s := strategy.evaluate(m, messages[:i])) is not None
    ]
    frame_side = [1 if s.side == "buy" else -1 for s in live]
    assert live and not math.isnan(live[0].price)
    assert len(frame_side) == len(live)
    assert strategy.evaluate(messages[100], ()) is None  # no history: no decision
