"""Settings of the executor service: exits, sizing, risk limits, the paper broker's costs, and
the exchange a live account trades on."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from services.executor.exits import ExitRules, parse_ladder
from services.executor.risk import RiskLimits
from services.executor.sizing import Sizing
from services.executor.trader import Trader
from shared.settings import CommonSettings


class ExecutorSettings(CommonSettings):
    """Executor: one paper account trading every market's signals, exits on every candle."""

    metrics_port: int = Field(default=9104, ge=0, le=65535)
    # A skipped tick would leave the book wrong: retry a batch through crash loops (the pending
    # metrics show it) rather than dead-letter valid input. Undecodable entries still go.
    max_deliveries: int = Field(default=1_000, ge=1)
    account: str = Field(
        default="paper", min_length=1, description="the trader's name in the store"
    )
    equity: float = Field(default=10_000.0, gt=0, description="starting cash (quote currency)")
    slippage_bps: float = Field(default=5.0, ge=0, le=1_000)
    fee_bps: float = Field(default=10.0, ge=0, le=1_000)
    # sizing
    sizing: Literal["fixed_quote", "equity_pct", "risk"] = "fixed_quote"
    order_quote_amount: float = Field(default=100.0, gt=0, description="fixed_quote sizing")
    equity_pct: float = Field(default=10.0, gt=0, le=100)
    risk_pct: float = Field(default=1.0, gt=0, le=100, description="equity lost at the stop")
    # exits (None or an empty ladder turns one off)
    stop_loss_pct: float | None = Field(default=2.0, gt=0, lt=100)
    stop_loss_atr: float | None = Field(default=None, gt=0)
    take_profits: Annotated[tuple[tuple[float, float], ...], NoDecode] = ((1.5, 0.5), (3.0, 0.5))
    take_profit_in_atr: bool = False
    trailing_pct: float | None = Field(default=None, gt=0, lt=100)
    trailing_atr: float | None = Field(default=None, gt=0)
    breakeven_after_first_tp: bool = True
    time_stop_candles: int | None = Field(default=None, ge=1)
    # risk limits
    max_open_positions: int | None = Field(default=5, ge=1)
    max_notional_per_symbol: float | None = Field(default=None, gt=0)
    max_notional_total: float | None = Field(default=None, gt=0)
    cooldown_ms: int = Field(default=0, ge=0)
    max_daily_loss: float | None = Field(default=None, gt=0)
    stale_after_ms: int | None = Field(default=None, ge=1)
    kill_switch: bool = False
    # where orders go: "paper" fills them at the next candle's open; "live" sends them to
    # `exchange` through ccxt at once (equity is then the budget the trader may spend)
    broker: Literal["paper", "live"] = "paper"
    exchange: str = Field(default="binance", min_length=1, description="ccxt id (live)")
    api_url: str | None = Field(
        default=None, description="base URL replacing the exchange's REST host (testnet)"
    )
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    order_timeout_ms: int = Field(default=10_000, ge=100, description="per exchange request")
    order_submissions: int = Field(default=3, ge=1, description="sends of one order, at most")

    @model_validator(mode="after")
    def _live_needs_keys(self) -> ExecutorSettings:
        if self.broker == "live" and not (
            self.api_key and self.api_key.get_secret_value()
            and self.api_secret and self.api_secret.get_secret_value()
        ):  # fmt: skip
            raise ValueError("BROKER=live needs API_KEY and API_SECRET")
        return self

    @field_validator("take_profits", mode="before")
    @classmethod
    def _ladder(cls, value: object) -> object:
        return parse_ladder(value) if isinstance(value, str) else value

    def exit_rules(self) -> ExitRules:
        """The exit rules (validated again by ExitRules itself)."""
        return ExitRules(
            stop_loss_pct=self.stop_loss_pct, stop_loss_atr=self.stop_loss_atr,
            take_profits=self.take_profits, take_profit_in_atr=self.take_profit_in_atr,
            trailing_pct=self.trailing_pct, trailing_atr=self.trailing_atr,
            breakeven_after_first_tp=self.breakeven_after_first_tp,
            time_stop_candles=self.time_stop_candles,
        )  # fmt: skip

    def position_sizing(self) -> Sizing:
        """How big each entry is."""
        return Sizing(
            mode=self.sizing, quote_amount=self.order_quote_amount,
            equity_pct=self.equity_pct, risk_pct=self.risk_pct,
        )  # fmt: skip

    def risk_limits(self) -> RiskLimits:
        """The limits every entry is checked against."""
        return RiskLimits(
            max_open_positions=self.max_open_positions,
            max_notional_per_symbol=self.max_notional_per_symbol,
            max_notional_total=self.max_notional_total, cooldown_ms=self.cooldown_ms,
            max_daily_loss=self.max_daily_loss, stale_after_ms=self.stale_after_ms,
            kill_switch=self.kill_switch,
        )  # fmt: skip

    def new_trader(self) -> Trader:
        """A fresh paper account with these rules, sizing, limits, costs and equity."""
        return Trader(
            self.exit_rules(), self.position_sizing(), self.risk_limits(),
            slippage_bps=self.slippage_bps, fee_bps=self.fee_bps, equity=self.equity,
            exchange=self.account, live=self.broker == "live",
        )  # fmt: skip
