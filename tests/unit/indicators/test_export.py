"""`candlebus indicators FILE`: the real command on real candles prints the batch path's numbers."""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import talib

from services.indicators.engine import IndicatorParams, compute_frame
from services.indicators.export import (
    InputError,
    add_arguments,
    infer_timeframe_ms,
    resolve_timeframe_ms,
)
from tests.conftest import ROOT, ohlcv_path

# The published contract, spelled out here so a change to it fails this test.
COLUMNS = [
    "open_time",
    "close",
    "rsi",
    "stoch_k",
    "stoch_d",
    "stochrsi_fastk",
    "stochrsi_fastd",
    "atr",
    "volatility_ratio",
    "band_lower",
    "band_upper",
]
ONE_MINUTE_MS = 60_000


def run_indicators(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m services.cli indicators ARGUMENTS` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "indicators", *map(str, arguments)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def parse_output(stdout: str) -> tuple[list[str], dict[str, npt.NDArray[np.float64]]]:
    """Return the header and the columns (empty fields as NaN) of the command's CSV."""
    header, *rows = list(csv.reader(stdout.splitlines()))
    values = np.array([[float(field) if field else math.nan for field in row] for row in rows])
    return header, {name: values[:, index] for index, name in enumerate(header)}


def read_json_rows(path: Path) -> npt.NDArray[np.float64]:
    return np.array(json.loads(path.read_text()), dtype=np.float64)


def expected_frame(
    rows: npt.NDArray[np.float64],
    *,
    timeframe_ms: int = ONE_MINUTE_MS,
    params: IndicatorParams | None = None,
    fill_gaps: bool = True,
) -> dict[str, npt.NDArray[np.float64]]:
    frame = compute_frame(
        rows[:, 0].astype(np.int64),
        rows[:, 2],
        rows[:, 3],
        rows[:, 4],
        timeframe_ms=timeframe_ms,
        params=params or IndicatorParams(),
        fill_gaps=fill_gaps,
    )
    return {
        ("open_time" if name == "open_time_ms" else name): column for name, column in frame.items()
    }


def assert_same_numbers(
    printed: dict[str, npt.NDArray[np.float64]], expected: dict[str, npt.NDArray[np.float64]]
) -> None:
    """Every printed column equals the expected one exactly (repr round-trips floats)."""
    for name in COLUMNS:
        np.testing.assert_array_equal(printed[name], expected[name], err_msg=name)


def write_csv_copy(rows: npt.NDArray[np.float64], path: Path) -> None:
    lines = ["open_time,open,high,low,close,volume"]
    lines += [",".join([str(int(row[0])), *map(repr, row[1:].tolist())]) for row in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", ["ETH_BTC-1m.json", "XMR_BTC-1m.json"])
def test_prints_one_row_per_candle_with_the_batch_path_numbers(name: str) -> None:
    path = ohlcv_path(name)
    rows = read_json_rows(path)

    result = run_indicators(path)

    assert result.returncode == 0, result.stderr
    header, printed = parse_output(result.stdout)
    assert header == COLUMNS
    assert printed["open_time"].size == len(rows)
    np.testing.assert_array_equal(printed["open_time"], rows[:, 0])
    np.testing.assert_array_equal(printed["close"], rows[:, 4])
    assert_same_numbers(printed, expected_frame(rows))
    # Warm-up is printed as empty fields, then every column has values.
    warm_up = IndicatorParams().warm_up_candles
    assert all(math.isnan(printed[name][0]) for name in COLUMNS[2:])
    assert not any(np.isnan(printed[name][warm_up:]).any() for name in COLUMNS)


def test_no_fill_gaps_computes_on_the_rows_as_given_like_talib() -> None:
    path = ohlcv_path("XMR_BTC-1m.json")  # about 1,400 gaps: the policy changes the numbers
    rows = read_json_rows(path)

    result = run_indicators(path, "--no-fill-gaps")

    assert result.returncode == 0, result.stderr
    _header, printed = parse_output(result.stdout)
    np.testing.assert_array_equal(printed["rsi"], talib.RSI(rows[:, 4], 14))
    assert_same_numbers(printed, expected_frame(rows, fill_gaps=False))
    filled = expected_frame(rows, fill_gaps=True)
    assert not np.allclose(printed["rsi"], filled["rsi"], equal_nan=True)


def test_csv_input_prints_the_same_as_json(tmp_path: Path) -> None:
    path = ohlcv_path("ETH_BTC-1m.json")
    copy = tmp_path / "ETH_BTC-1m.csv"
    write_csv_copy(read_json_rows(path), copy)

    from_json = run_indicators(path)
    from_csv = run_indicators(copy)

    assert from_csv.returncode == 0, from_csv.stderr
    assert from_csv.stdout == from_json.stdout


def test_parameter_flags_change_the_computation() -> None:
    path = ohlcv_path("ETH_BTC-1m.json")
    params = IndicatorParams(
        rsi_period=6,
        stoch_period=9,
        stoch_k_period=2,
        stochrsi_fastd_period=4,
        atr_ma_period=12,
        sensitivity=1.1,
        min_width=20.0,
    )

    result = run_indicators(
        path,
        *("--rsi-period", "6", "--stoch-period", "9", "--stoch-k-period", "2"),
        *("--stochrsi-fastd-period", "4", "--atr-ma-period", "12"),
        *("--sensitivity", "1.1", "--min-width", "20"),
    )

    assert result.returncode == 0, result.stderr
    _header, printed = parse_output(result.stdout)
    assert_same_numbers(printed, expected_frame(read_json_rows(path), params=params))


def test_every_parameter_has_a_flag_defaulting_to_the_dataclass_default() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    args = parser.parse_args(["candles.json"])

    defaults = IndicatorParams()
    for name in IndicatorParams.__dataclass_fields__:
        assert getattr(args, name) == getattr(defaults, name), name
    assert args.fill_gaps is True
    assert args.timeframe is None


def test_timeframe_is_inferred_from_the_most_common_step_of_an_unnamed_file(
    tmp_path: Path,
) -> None:
    rows = read_json_rows(ohlcv_path("LTC_BTC-5m.json"))[:3000]
    rows = np.delete(rows, [100, 101, 500, 2000], axis=0)  # gaps that 5m fills differently than 1m
    unnamed = tmp_path / "candles.json"
    unnamed.write_text(json.dumps(rows.tolist()))

    result = run_indicators(unnamed)

    assert result.returncode == 0, result.stderr
    _header, printed = parse_output(result.stdout)
    assert_same_numbers(printed, expected_frame(rows, timeframe_ms=300_000))
    one_minute = expected_frame(rows, timeframe_ms=ONE_MINUTE_MS)
    assert not np.allclose(printed["rsi"], one_minute["rsi"], equal_nan=True)


def test_inferred_timeframe_is_the_most_common_step_and_the_shortest_on_a_tie() -> None:
    minute = ONE_MINUTE_MS
    assert infer_timeframe_ms(np.array([0, minute, 2 * minute, 5 * minute, 6 * minute])) == minute
    assert infer_timeframe_ms(np.array([0, 5 * minute, 6 * minute])) == minute
    with pytest.raises(InputError, match="--timeframe"):
        infer_timeframe_ms(np.array([0]))


def test_timeframe_flag_wins_over_the_file_name_which_wins_over_inference() -> None:
    times = np.arange(10, dtype=np.int64) * ONE_MINUTE_MS
    named = Path("ETH_BTC-5m.json")
    assert resolve_timeframe_ms(named, times, "1h") == 3_600_000
    assert resolve_timeframe_ms(named, times, None) == 300_000
    assert resolve_timeframe_ms(Path("eth.json"), times, None) == ONE_MINUTE_MS


GOOD = [1_000, 0.5, 0.6, 0.4, 0.5, 10.0]


@pytest.mark.parametrize(
    ("content", "arguments", "reason"),
    [
        (None, (), "no such file"),
        ("[[1000, 0.5, 0.6", (), "not a ccxt OHLCV array"),
        ('{"open": 1}', (), "not a ccxt OHLCV array"),
        ("[]", (), "no candles"),
        (json.dumps([GOOD, [0, *GOOD[1:]]]), (), "opens before"),
        (json.dumps([GOOD, GOOD]), (), "repeats the open time"),
        (json.dumps([GOOD, [61_000, 0.5, 0.6, 0.0, 0.5, 1.0]]), (), "non-positive"),
        (json.dumps([GOOD, [61_000, -0.5, 0.6, 0.4, 0.5, 1.0]]), (), "non-positive"),
        (json.dumps([GOOD]), ("--rsi-period", "0"), "rsi_period must be an integer >= 1"),
        (json.dumps([GOOD]), ("--sensitivity", "0"), "sensitivity must be > 0"),
    ],
    ids=[
        "missing-file",
        "truncated-json",
        "not-rows",
        "empty",
        "unsorted",
        "duplicate-time",
        "zero-price",
        "negative-price",
        "bad-period",
        "bad-sensitivity",
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(
    tmp_path: Path, content: str | None, arguments: tuple[str, ...], reason: str
) -> None:
    path = tmp_path / "ETH_BTC-1m.json"
    if content is not None:
        path.write_text(content)

    result = run_indicators(path, *arguments)

    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("candlebus indicators: error: ")
    assert reason in line


def test_csv_without_the_needed_columns_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ETH_BTC-1m.csv"
    path.write_text("time,open,high,low,close,volume\n1000,0.5,0.6,0.4,0.5,10\n")

    result = run_indicators(path)

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "header lacks columns ['open_time']" in line
