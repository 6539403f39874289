"""Backtest settings (I/O edge): defaults, a settings file and flags in, a `BacktestConfig` out.

Every setting comes from the defaults of the dataclasses behind `BacktestConfig`, then a
settings file (TOML or JSON), then the command line: the later one wins, setting by setting.
The file's top level holds `equity`, `slippage_bps`, `fee_bps` and `fill_gaps`; its tables are
the sections below, each key a field of the section's dataclass (the string "none" turns an
optional setting off, as TOML has no null):

    [indicators]  IndicatorParams     [exits]  ExitRules          [sizing]  Sizing
    [strategy]    BandsParams         [switches]  ExitSwitches    [limits]  RiskLimits
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from services.executor.backtest import BacktestConfig, ExitSwitches
from services.executor.exits import ExitRules, parse_ladder
from services.executor.risk import RiskLimits
from services.executor.sizing import MODES, Sizing
from services.indicators.engine import IndicatorParams
from services.indicators.export import InputError
from services.signals.config import ConfigError, parse_params
from services.signals.strategy import BandsParams

SECTIONS: Final[dict[str, type[Any]]] = {
    "indicators": IndicatorParams,
    "strategy": BandsParams,
    "exits": ExitRules,
    "switches": ExitSwitches,
    "sizing": Sizing,
    "limits": RiskLimits,
}
TOP_LEVEL: Final = ("equity", "slippage_bps", "fee_bps", "fill_gaps")
NONE: Final = "none"  # what turns an optional setting off where null cannot be written (TOML)


def parse_take_profits(text: str) -> tuple[tuple[float, float], ...]:
    """Parse a take-profit ladder flag ("1.5:0.5,3:0.5"), as argparse wants its errors."""
    try:
        return parse_ladder(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _number(kind: type[float], optional: bool) -> Callable[[str], float | None]:
    """Return an argparse type: a number of `kind`, or None for "none" when `optional`."""

    def parse(text: str) -> float | None:
        if optional and text.lower() == NONE:
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None

    return parse


def _setting(parser: argparse._ActionsContainer, flag: str, dest: str, **options: Any) -> None:
    """Add a flag that sets `dest` ("section.field" or a top-level name) only when given."""
    parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, **options)


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; a flag left out leaves the setting to the file or default."""
    _setting(parser, "--no-fill-gaps", "fill_gaps", action="store_const", const=False,
             help="take the rows as given instead of filling missing candles as live")  # fmt: skip
    _exit_arguments(parser.add_argument_group("exits (ExitRules; each kind can be switched off)"))
    _account_arguments(parser.add_argument_group("account (Sizing, costs, RiskLimits)"))
    _generated_arguments(parser.add_argument_group("strategy (BandsParams)"), "strategy")
    _generated_arguments(parser.add_argument_group("indicators (IndicatorParams)"), "indicators")


def _exit_arguments(group: argparse._ArgumentGroup) -> None:
    """Add the flags of the exit rules and of their switches (a flag and its "--no-" form
    exclude each other)."""
    rules, off = ExitRules(), {"action": "store_const", "const": False}
    ladder = ",".join(f"{distance:g}:{fraction:g}" for distance, fraction in rules.take_profits)
    flags: list[tuple[str, str, str, dict[str, Any]]] = [
        ("stop", "--stop-loss-pct", "exits.stop_loss_pct", {"type": float, "metavar": "PCT",
         "help": f"stop this far below the entry, percent (default {rules.stop_loss_pct})"}),
        ("stop", "--no-stop-loss", "switches.stop_loss", {"help": "no stop-loss exits", **off}),
        ("", "--stop-loss-atr", "exits.stop_loss_atr", {"type": float, "metavar": "ATRS",
         "help": "stop this many entry ATRs below the entry (wins over the percentage)"}),
        ("take", "--take-profit", "exits.take_profits", {"type": parse_take_profits,
         "metavar": "LADDER", "help": f"distance:fraction of the entry quantity,... ({ladder})"}),
        ("take", "--no-take-profit", "switches.take_profit", {"help": "no take-profits", **off}),
        ("", "--take-profit-in-atr", "exits.take_profit_in_atr", {"action": "store_const",
         "const": True, "help": "take-profit distances in entry ATRs instead of percent"}),
        ("trail", "--trailing-pct", "exits.trailing_pct", {"type": float, "metavar": "PCT",
         "help": "trail the highest high by this percent (default: no trailing stop)"}),
        ("trail", "--trailing-atr", "exits.trailing_atr", {"type": float, "metavar": "ATRS",
         "help": "trail the highest high by this many entry ATRs"}),
        ("trail", "--no-trailing-stop", "switches.trailing_stop",
         {"help": "no trailing-stop exits", **off}),
        ("", "--no-breakeven", "switches.breakeven",
         {"help": "leave the stop where it is after the first take-profit", **off}),
        ("time", "--time-stop", "exits.time_stop_candles", {"type": int, "metavar": "CANDLES",
         "help": "exit at the close of the N-th candle held (default: no time stop)"}),
        ("time", "--no-time-stop", "switches.time_stop", {"help": "no time-stop exits", **off}),
        ("", "--no-signal-exit", "switches.signal",
         {"help": "ignore sell signals: holdings leave by their exit rules only", **off}),
    ]  # fmt: skip
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for together, flag, dest, options in flags:
        if together and together not in exclusive:
            exclusive[together] = group.add_mutually_exclusive_group()
        _setting(exclusive[together] if together else group, flag, dest, **options)


def _account_arguments(group: argparse._ArgumentGroup) -> None:
    """Add the flags of sizing, costs and equity, and one per risk limit."""
    sizing, config = Sizing(), BacktestConfig()
    flags: list[tuple[str, str, dict[str, Any]]] = [
        ("--sizing", "sizing.mode", {"choices": MODES,
         "help": f"how much an entry buys (default {sizing.mode})"}),
        ("--quote-amount", "sizing.quote_amount", {"type": float, "metavar": "QUOTE",
         "help": f"fixed_quote: quote currency per entry (default {sizing.quote_amount:g})"}),
        ("--equity-pct", "sizing.equity_pct", {"type": float, "metavar": "PCT",
         "help": f"equity_pct: percent of equity per entry (default {sizing.equity_pct:g})"}),
        ("--risk-pct", "sizing.risk_pct", {"type": float, "metavar": "PCT",
         "help": f"risk: percent of equity lost at the stop (default {sizing.risk_pct:g})"}),
        ("--slippage-bps", "slippage_bps", {"type": float, "metavar": "BPS",
         "help": f"against the trader on market fills (default {config.slippage_bps:g})"}),
        ("--fee-bps", "fee_bps", {"type": float, "metavar": "BPS",
         "help": f"of every fill's notional (default {config.fee_bps:g})"}),
        ("--equity", "equity", {"type": float, "metavar": "QUOTE",
         "help": f"initial equity (default {config.equity:g})"}),
    ]  # fmt: skip
    for flag, dest, options in flags:
        _setting(group, flag, dest, **options)
    _generated_arguments(group, "limits")


def _generated_arguments(group: argparse._ArgumentGroup, section: str) -> None:
    """Add one flag per field of a section's dataclass, from its type: a number (or "none"
    where None is allowed), a choice among a Literal's values, or a switch for a bool."""
    kind = SECTIONS[section]
    hints = typing.get_type_hints(kind)
    for field in dataclasses.fields(kind):
        flag, dest = "--" + field.name.replace("_", "-"), f"{section}.{field.name}"
        types = typing.get_args(hints[field.name]) or (hints[field.name],)
        if bool in types:  # a switch away from the default
            flag = flag if field.default is False else f"--no-{field.name.replace('_', '-')}"
            _setting(group, flag, dest, action="store_const", const=not field.default)
        elif all(isinstance(choice, str) for choice in types):
            _setting(group, flag, dest, choices=types, help=f"default {field.default}")
        else:
            number = int if int in types else float
            optional = type(None) in types
            _setting(group, flag, dest, type=_number(number, optional),
                     metavar=number.__name__.upper() + ("|none" if optional else ""),
                     help=f"default {field.default}")  # fmt: skip


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """Return the settings given on the command line, as "section.field" or top-level names."""
    return {key: value for key, value in vars(args).items() if "." in key or key in TOP_LEVEL}


def read_settings_file(path: Path) -> dict[str, Any]:
    """Read a settings file (.toml, else JSON) into a table of settings."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it: {exc}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a table of settings")
    return data


def build_config(
    file_settings: Mapping[str, Any], overrides: Mapping[str, Any], source: str
) -> BacktestConfig:
    """Return the config: dataclass defaults, then `file_settings`, then `overrides` (flat
    "section.field" or top-level names)."""
    merged: dict[str, Any] = dict(file_settings)
    unknown = sorted(set(merged) - set(SECTIONS) - set(TOP_LEVEL))
    if unknown:
        raise InputError(
            f"{source}: unknown settings {unknown}; known: {sorted(SECTIONS) + list(TOP_LEVEL)}"
        )
    for name in SECTIONS:
        table = merged.get(name, {})
        if not isinstance(table, dict):
            raise InputError(f"{source}: [{name}] must be a table of settings")
        merged[name] = dict(table)
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if section:
            merged[section][name] = value
        else:
            merged[key] = value
    sections = {name: _section(name, kind, merged[name], source) for name, kind in SECTIONS.items()}
    top = {key: merged[key] for key in TOP_LEVEL if key in merged}
    for key, value in top.items():
        if key == "fill_gaps" and not isinstance(value, bool):
            raise InputError("fill_gaps must be true or false")
        if key != "fill_gaps" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InputError(f"{key} must be a number, got {value!r}")
    try:
        config = BacktestConfig(**sections, **top)
        config.trader()  # the account checks its costs, equity and sizing against the exits
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return config


def _section(name: str, kind: type[Any], values: Mapping[str, Any], source: str) -> Any:
    """Return one section's dataclass from its settings, refusing unknown or bad ones."""
    if name == "strategy":  # the signals service's own checks and messages
        try:
            return parse_params(dict(values), source=f"{source}: [strategy]")
        except ConfigError as exc:
            raise InputError(str(exc)) from None
    known = {field.name for field in dataclasses.fields(kind)}
    if extra := sorted(set(values) - known):
        raise InputError(f"{source}: [{name}] has unknown settings {extra}; known: {sorted(known)}")
    cleared = {
        key: None if isinstance(value, str) and value.lower() == NONE else value
        for key, value in values.items()
    }
    try:
        return kind(**cleared)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} settings: {exc}") from None
