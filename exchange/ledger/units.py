"""Ledger units and display units.

Currencies are counted in their ledger unit (``10**-CURRENCY_DECIMALS``, e.g. 1e-8 CNY) and shown
in currency units. Token assets are counted in whole tokens; the API shows them in MTok
(1,000,000 tokens, up to 6 decimals) and as integer tokens; staff enter whole tokens.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from exchange.errors import ValidationFailed
from exchange.input_bounds import DECIMAL_MAX_CHARACTERS, decimal_bounds_check
from exchange.markets.currencies import CURRENCY_DECIMALS, TOKENS_PER_MTOK

MTOK_DECIMALS = 6
# bigint bounds: no single amount may come near them (balances must still fit after adding it).
MAX_AMOUNT = 10**18
BIGINT_MAX = 2**63 - 1

assert 10**MTOK_DECIMALS == TOKENS_PER_MTOK


def is_currency(asset: str) -> bool:
    return asset in CURRENCY_DECIMALS


def display_decimals(asset: str) -> int:
    """Decimals of the display unit: currency units for currencies, MTok for token assets."""
    return CURRENCY_DECIMALS.get(asset, MTOK_DECIMALS)


def amount_display(asset: str, amount: int) -> str:
    """An integer ledger amount as a fixed-point string in the asset's display unit."""
    decimals = display_decimals(asset)
    return f"{Decimal(amount).scaleb(-decimals):.{decimals}f}"


def amount_parse(asset: str, text: str) -> int:
    """Staff input to ledger units: currency units for currencies, whole tokens for tokens.

    Refuses anything finer than one ledger unit rather than rounding it away.
    """
    text = str(text).strip()
    if len(text) > DECIMAL_MAX_CHARACTERS:
        raise ValidationFailed("amount is out of range.", details={"amount": "out_of_range"})
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise ValidationFailed(f"{text!r} is not a decimal number.") from error
    if not value.is_finite():
        raise ValidationFailed(f"{text!r} is not a finite number.")
    decimal_bounds_check(value, field="amount")  # before scaleb, which could overflow
    scaled = value.scaleb(CURRENCY_DECIMALS.get(asset, 0))
    if scaled != scaled.to_integral_value():
        unit = f"1e-{CURRENCY_DECIMALS[asset]} {asset}" if is_currency(asset) else "one token"
        raise ValidationFailed(f"{text} {asset} is finer than the ledger unit ({unit}).")
    return int(scaled)
