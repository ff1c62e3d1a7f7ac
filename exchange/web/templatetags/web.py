"""Template helpers of the trading pages: live market rows and exact number display."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import template

from exchange.marketdata.selectors import ticker_get
from exchange.markets.currencies import TOKENS_PER_MTOK

register = template.Library()


@register.simple_tag
def market_rows(markets: Any) -> list[dict[str, Any]]:
    """Each market with its ticker (cached by the market-data selector for a second)."""
    return [{"market": market, "ticker": ticker_get(market=market)} for market in markets]


@register.filter
def trim(value: Any, minimum: int = 2) -> str:
    """A decimal string without trailing zeros, keeping ``minimum`` decimals (1.50000000 → 1.50)."""
    if value in (None, ""):
        return "—"
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    text = format(number.normalize(), "f")
    whole, _, fraction = text.partition(".")
    fraction = fraction.ljust(int(minimum), "0")
    return f"{whole}.{fraction}" if fraction else whole


@register.filter
def tokens(quantity: Any) -> str:
    """MTok (decimal string) → whole tokens with thousands separators."""
    try:
        count = int(Decimal(str(quantity)) * TOKENS_PER_MTOK)
    except (InvalidOperation, ValueError):
        return "—"
    return f"{count:,}"


@register.filter
def thousands(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def direction(change: Any) -> str:
    """CSS class for a signed change: up, down or flat."""
    try:
        number = Decimal(str(change))
    except (InvalidOperation, ValueError):
        return "flat"
    return "up" if number > 0 else "down" if number < 0 else "flat"
