"""`candlebus backtest`: real candle files in, a report, the trades and a chart out."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.cli import main
from services.executor.backtest_cli import progress_printer
from services.executor.backtest_settings import parse_take_profits
from tests.conftest import ROOT, ohlcv_path

REPORT_KEYS = {
    "initial_equity", "final_equity", "total_return", "trades", "win_rate", "profit_factor",
    "max_drawdown", "sharpe", "exposure", "candles",
}  # fmt: skip
TRADE_KEYS = {
    "symbol", "side", "signal_id", "entry_time_ms", "entry_price", "quantity", "exit_time_ms",
    "exit_price", "exit_kind", "fees", "pnl", "return", "closed", "exits",
}  # fmt: skip


def run_backtest_command(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m services.cli backtest ARGUMENTS` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "backtest", *map(str, arguments)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def backtest(capsys: pytest.CaptureFixture[str], *arguments: str | Path) -> tuple[int, str, str]:
    """Run the command in this process; return its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as exited:
        main(["backtest", *map(str, arguments)])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def backtest_json(capsys: pytest.CaptureFixture[str], *arguments: str | Path) -> dict[str, Any]:
    code, out, err = backtest(capsys, "--json", *arguments)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def test_json_output_holds_the_report_and_every_trade() -> None:
    done = run_backtest_command("--data", ohlcv_path("ETH_BTC-1m.json"), "--json")

    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data["report"]) >= REPORT_KEYS
    assert len(data["trades"]) == data["report"]["trades"] > 10
    for trade in data["trades"]:
        assert set(trade) >= TRADE_KEYS
        assert trade["closed"] and trade["exits"]
        assert trade["exit_time_ms"] > trade["entry_time_ms"] or trade["exit_kind"] != "signal"
    assert data["markets"] == [
        {
            "symbol": "ETH/BTC",
            "timeframe": "1m",
            "candles": 14_397,
            "first_open_time_ms": 1_516_423_980_000,
            "last_open_time_ms": 1_517_287_800_000,
        }
    ]


def test_a_missing_file_exits_2_with_one_clear_line() -> None:
    done = run_backtest_command("--data", "no/such/ETH_BTC-1m.json", "--json")

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "candlebus backtest: error: no/such/ETH_BTC-1m.json: no such file\n"


def test_a_malformed_file_exits_2_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "ETH_BTC-1m.json"
    path.write_text("[[1516423980000, 1, 1, 1, 1, 1], [1516423920000, 1, 1, 1, 1, 1]]")

    code, out, err = backtest(capsys, "--data", path)

    assert code == 2 and out == ""
    assert err.startswith(f"candlebus backtest: error: {path}: candle 2")
    assert err.count("\n") == 1


def test_the_chart_is_written_as_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "backtest.png"

    code, out, err = backtest(capsys, "--data", ohlcv_path("ETH_BTC-1m.json"), "--chart", chart)

    assert code == 0, err
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert chart.stat().st_size > 10_000
    assert "total return" in out


def test_the_chart_is_written_as_self_contained_html(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chart = tmp_path / "backtest.html"

    code, _out, err = backtest(capsys, "--data", ohlcv_path("ETH_BTC-1m.json"), "--chart", chart)

    page = chart.read_text()
    assert code == 0, err
    assert page.count("<svg") == 3 and "<polyline" in page and "entry" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page


def test_an_unknown_chart_format_is_refused_before_running(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = backtest(
        capsys, "--data", ohlcv_path("ETH_BTC-1m.json"), "--chart", tmp_path / "c.svg"
    )

    assert code == 2 and out == ""
    assert "must end in .png or .html" in err


def test_the_command_line_wins_over_the_settings_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = tmp_path / "backtest.toml"
    settings.write_text(
        "equity = 5000.0\nfee_bps = 2.0\n"
        "[exits]\nstop_loss_pct = 0.5\ntake_profits = [[0.3, 0.5], [1.0, 0.5]]\n"
        "[limits]\nmax_open_positions = 'none'\n"
        "[indicators]\nrsi_period = 10\n"
    )

    data = backtest_json(
        capsys, "--data", ohlcv_path("ETH_BTC-1m.json"), "--config", settings,
        "--stop-loss-pct", "0.7", "--no-breakeven", "--rsi-period", "12",
    )  # fmt: skip

    config = data["config"]
    assert config["equity"] == 5000.0 and config["fee_bps"] == 2.0
    assert config["exits"]["stop_loss_pct"] == 0.7
    assert config["exits"]["take_profits"] == [[0.3, 0.5], [1.0, 0.5]]
    assert config["switches"]["breakeven"] is False
    assert config["limits"]["max_open_positions"] is None
    assert config["indicators"]["rsi_period"] == 12
    assert data["report"]["initial_equity"] == 5000.0
    kinds = {leg["kind"] for trade in data["trades"] for leg in trade["exits"]}
    assert "breakeven_stop" not in kinds and "stop_loss" in kinds


def test_switching_an_exit_off_on_the_command_line_removes_its_exits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = backtest_json(
        capsys, "--data", ohlcv_path("ETH_BTC-1m.json"), "--take-profit", "0.3:0.5,1:0.5",
        "--no-stop-loss", "--no-signal-exit", "--time-stop", "60",
    )  # fmt: skip

    kinds = {leg["kind"] for trade in data["trades"] for leg in trade["exits"]}
    assert kinds == {"take_profit", "breakeven_stop", "time_stop"}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ('{"exits": {"stop_loss_pct": -1}}', "stop_loss_pct must be > 0"),
        ('{"exit": {}}', "unknown settings ['exit']"),
        ('{"sizing": {"mode": "all_in"}}', "sizing mode must be one of"),
        ('{"sizing": {"mode": "risk"}, "switches": {"stop_loss": false}}', "needs a stop-loss"),
        ('{"equity": "lots"}', "equity must be a number"),
        ('{"strategy": {"line": "rsi"}}', "line must be one of"),
        ("[1, 2]", "expected a table of settings"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, settings: str, expected: str
) -> None:
    path = tmp_path / "settings.json"
    path.write_text(settings)

    code, out, err = backtest(capsys, "--data", ohlcv_path("ETH_BTC-1m.json"), "--config", path)

    assert code == 2 and out == ""
    assert err.startswith("candlebus backtest: error: ") and expected in err
    assert err.count("\n") == 1


def test_a_malformed_take_profit_ladder_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _out, err = backtest(
        capsys, "--data", ohlcv_path("ETH_BTC-1m.json"), "--take-profit", "1.5-0.5"
    )

    assert code == 2
    assert "expected DISTANCE:FRACTION" in err
    assert parse_take_profits("1.5:0.5,3:0.5") == ((1.5, 0.5), (3.0, 0.5))


def test_two_files_of_one_symbol_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "ETH_BTC-1m.json"
    copy.write_bytes(ohlcv_path("ETH_BTC-1m.json").read_bytes())

    code, _out, err = backtest(capsys, "--data", ohlcv_path("ETH_BTC-1m.json"), copy)

    assert code == 2
    assert "are both ETH/BTC" in err


def test_progress_goes_to_a_pipe_every_tenth_only_for_a_long_run() -> None:
    stream = io.StringIO()
    assert progress_printer(50_000, stream) is None  # short, and not a terminal

    show = progress_printer(500_000, stream)
    assert show is not None
    for done in range(0, 500_001, 5_000):
        show(done, 500_000)

    lines = stream.getvalue().splitlines()
    assert lines[0] == "backtest: 0% of 500,000 candles"
    assert lines[-1] == "backtest: 100% of 500,000 candles"
    assert len(lines) == 11
