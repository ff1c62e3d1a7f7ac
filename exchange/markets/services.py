"""Market writes and the validation of a market's configuration."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from exchange.errors import InvalidMarketConfiguration
from exchange.markets.currencies import CURRENCY_DECIMALS, TOKENS_PER_MTOK
from exchange.markets.models import Market


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    return step > 0 and (value % step) == 0


def market_configuration_validate(
    *,
    quote_currency: str,
    tick_size: Decimal | None,
    lot_size: Decimal | None,
    min_quantity: Decimal | None,
    maker_fee_rate: Decimal | None = Decimal(0),
    taker_fee_rate: Decimal | None = Decimal(0),
    price_band: Decimal | None = Decimal("0.1"),
) -> None:
    """Refuse a configuration under which some notional would not be exact in ledger units."""
    errors: dict[str, str] = {}
    if quote_currency not in CURRENCY_DECIMALS:
        errors["quote_currency"] = f"Unknown currency {quote_currency!r}."
    if tick_size is None or tick_size <= 0:
        errors["tick_size"] = "Tick size must be positive."
    if lot_size is None or lot_size <= 0:
        errors["lot_size"] = "Lot size must be positive."
    elif (lot_size * TOKENS_PER_MTOK) % 1 != 0:
        errors["lot_size"] = "Lot size must be a whole number of tokens (a multiple of 0.000001)."
    if not errors and tick_size is not None and lot_size is not None:
        decimals = CURRENCY_DECIMALS[quote_currency]
        notional_step = tick_size * lot_size
        if notional_step.scaleb(decimals) % 1 != 0:
            errors["tick_size"] = (
                f"tick size × lot size = {notional_step.normalize()} {quote_currency} is finer "
                f"than the ledger unit 1e-{decimals} {quote_currency}: notionals would not be "
                "exact. Use a coarser tick or lot."
            )
    if min_quantity is None or lot_size is None or not _is_multiple(min_quantity, lot_size):
        errors.setdefault(
            "min_quantity", "Minimum quantity must be a positive multiple of the lot."
        )
    for field, rate in (("maker_fee_rate", maker_fee_rate), ("taker_fee_rate", taker_fee_rate)):
        if rate is None or not (Decimal(0) <= rate < Decimal("0.1")):
            errors[field] = "Fee rate must be at least 0 and below 0.1 (10%)."
    if price_band is None or not (Decimal(0) < price_band < 1):
        errors["price_band"] = "Price band must be between 0 and 1."
    if errors:
        raise InvalidMarketConfiguration(
            "Invalid market configuration: " + " ".join(errors.values()), details=errors
        )


def market_create(**fields: Any) -> Market:
    market_configuration_validate(
        quote_currency=fields["quote_currency"],
        tick_size=fields["tick_size"],
        lot_size=fields["lot_size"],
        min_quantity=fields["min_quantity"],
        maker_fee_rate=fields.get("maker_fee_rate", Decimal("0.001")),
        taker_fee_rate=fields.get("taker_fee_rate", Decimal("0.002")),
        price_band=fields.get("price_band", Decimal("0.10")),
    )
    with transaction.atomic():
        return Market.objects.create(**fields)


# Every demo model is a complete pair (an input and an output market of the same model, region and
# quote currency): the gateway serves a model only through both.
DEMO_MARKETS: list[dict[str, Any]] = [
    {
        "symbol": "QWEN3.6-PLUS-OUT-CNY",
        "base": "QWEN3.6-PLUS-OUT",
        "quote_currency": "CNY",
        "model_name": "Qwen3.6-Plus",
        "token_kind": "output",
        "region": "cn-east",
        "min_throughput_tps": 40,
        "max_first_token_latency_ms": 1500,
        "tick_size": Decimal("0.01"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "QWEN3.6-PLUS-IN-CNY",
        "base": "QWEN3.6-PLUS-IN",
        "quote_currency": "CNY",
        "model_name": "Qwen3.6-Plus",
        "token_kind": "input",
        "region": "cn-east",
        "min_throughput_tps": 40,
        "max_first_token_latency_ms": 1500,
        "tick_size": Decimal("0.01"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "DEEPSEEK-V3.2-OUT-CNY",
        "base": "DEEPSEEK-V3.2-OUT",
        "quote_currency": "CNY",
        "model_name": "DeepSeek-V3.2",
        "token_kind": "output",
        "region": "cn-north",
        "min_throughput_tps": 30,
        "max_first_token_latency_ms": 2000,
        "tick_size": Decimal("0.01"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "KIMI-K2-OUT-CNY",
        "base": "KIMI-K2-OUT",
        "quote_currency": "CNY",
        "model_name": "Kimi K2",
        "token_kind": "output",
        "region": "cn-north",
        "min_throughput_tps": 30,
        "max_first_token_latency_ms": 2000,
        "tick_size": Decimal("0.01"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "GLM-4.6-OUT-CNY",
        "base": "GLM-4.6-OUT",
        "quote_currency": "CNY",
        "model_name": "GLM-4.6",
        "token_kind": "output",
        "region": "cn-south",
        "min_throughput_tps": 30,
        "max_first_token_latency_ms": 2000,
        "tick_size": Decimal("0.01"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "LLAMA-4-MAVERICK-OUT-USD",
        "base": "LLAMA-4-MAVERICK-OUT",
        "quote_currency": "USD",
        "model_name": "Llama 4 Maverick",
        "token_kind": "output",
        "region": "us-west",
        "min_throughput_tps": 60,
        "max_first_token_latency_ms": 1000,
        "tick_size": Decimal("0.001"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "DEEPSEEK-V3.2-IN-CNY",
        "base": "DEEPSEEK-V3.2-IN",
        "quote_currency": "CNY",
        "model_name": "DeepSeek-V3.2",
        "token_kind": "input",
        "region": "cn-north",
        "min_throughput_tps": 30,
        "max_first_token_latency_ms": 2000,
        "tick_size": Decimal("0.01"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "KIMI-K2-IN-CNY",
        "base": "KIMI-K2-IN",
        "quote_currency": "CNY",
        "model_name": "Kimi K2",
        "token_kind": "input",
        "region": "cn-north",
        "min_throughput_tps": 30,
        "max_first_token_latency_ms": 2000,
        "tick_size": Decimal("0.01"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "GLM-4.6-IN-CNY",
        "base": "GLM-4.6-IN",
        "quote_currency": "CNY",
        "model_name": "GLM-4.6",
        "token_kind": "input",
        "region": "cn-south",
        "min_throughput_tps": 30,
        "max_first_token_latency_ms": 2000,
        "tick_size": Decimal("0.01"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
    {
        "symbol": "LLAMA-4-MAVERICK-IN-USD",
        "base": "LLAMA-4-MAVERICK-IN",
        "quote_currency": "USD",
        "model_name": "Llama 4 Maverick",
        "token_kind": "input",
        "region": "us-west",
        "min_throughput_tps": 60,
        "max_first_token_latency_ms": 1000,
        "tick_size": Decimal("0.001"),
        "lot_size": Decimal("0.001"),
        "min_quantity": Decimal("0.01"),
    },
]


def demo_markets_load() -> tuple[int, int]:
    """Create the demo markets that do not exist yet. Returns (created, already present)."""
    created = existing = 0
    for spec in DEMO_MARKETS:
        if Market.objects.filter(symbol=spec["symbol"]).exists():
            existing += 1
            continue
        market_create(**spec)
        created += 1
    return created, existing
