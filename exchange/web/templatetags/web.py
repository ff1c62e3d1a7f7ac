"""Template helpers of the trading pages: live market rows, and the one formatter per kind of
number (price, quantity, money, tokens, percent) and for times.

The browser formats the same kinds through ``exchange/static/js/format.js`` (``Intl``); both
follow the page's language and show the same digits: a price with its market's tick decimals, a
quantity with its lot decimals, money with the currency's decimals, thousands separators
everywhere. Prices and quantities are never rounded (an off-tick average keeps its digits).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import format_decimal, get_currency_precision
from django import template
from django.utils import dateformat, timezone
from django.utils.translation import get_language, to_locale

from exchange.ledger.units import MTOK_DECIMALS, is_currency
from exchange.marketdata.selectors import ticker_get
from exchange.markets.models import Market
from exchange.times import TimeFormatError, time_parse
from exchange.web.labels import cancel_reason_text, order_status_text
from orders.models import ListingStatus

register = template.Library()
EMPTY = "—"
# the API's average price is rounded to 8 decimals (orders.api.order_json)
PRICE_DECIMALS = 8


@register.simple_tag
def market_rows(markets: Any) -> list[dict[str, Any]]:
    """Each market with its ticker (cached by the market-data selector for a second)."""
    return [{"market": market, "ticker": ticker_get(market=market)} for market in markets]


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def decimals_of(step: Decimal) -> int:
    """Decimals of a step such as 0.01 (2) or 0.001 (3)."""
    exponent = step.normalize().as_tuple().exponent
    return max(0, -int(exponent))


def _locale() -> str:
    return to_locale(get_language() or "en")


def format_number(value: Any, minimum: int, maximum: int | None = None) -> str:
    """Locale-aware digits with grouping: at least ``minimum`` decimals, at most ``maximum``
    (more digits of an exact value are kept up to ``maximum``, never rounded below it)."""
    number = _decimal(value)
    if number is None:
        return EMPTY
    maximum = minimum if maximum is None else max(minimum, maximum)
    pattern = "#,##0" + ("." + "0" * minimum + "#" * (maximum - minimum) if maximum else "")
    return format_decimal(number, format=pattern, locale=_locale())


@register.filter
def price(value: Any, market: Market) -> str:
    """A price with the market's tick decimals (12 → 12.00); an average between ticks keeps
    its exact digits rather than being rounded to a price that was never paid."""
    return format_number(value, decimals_of(market.tick_size), PRICE_DECIMALS)


@register.filter
def quantity(value: Any, market: Market) -> str:
    """A quantity in MTok with the market's lot decimals (whole tokens beyond a lot are kept)."""
    return format_number(value, decimals_of(market.lot_size), MTOK_DECIMALS)


def currency_decimals(currency: str) -> int:
    """Decimals of the currency as people write it (CNY 2), from CLDR."""
    return get_currency_precision(currency)


@register.filter
def money(value: Any, currency: str) -> str:
    """An amount of a currency with exactly its usual decimals (CNY 2), rounded half to even as
    the browser's formatter is told to; exact amounts are in the statement's CSV."""
    return format_number(value, currency_decimals(currency))


@register.filter
def amount(value: Any, unit: Market | str) -> str:
    """A balance or ledger amount in its display unit: ``unit`` is the token asset's market (a
    quantity in MTok) or a currency code (money)."""
    if isinstance(unit, Market):
        return quantity(value, unit)
    if is_currency(unit):
        return money(value, unit)
    return format_number(value, 0, MTOK_DECIMALS)


@register.filter
def thousands(value: Any) -> str:
    """A whole number (tokens) with grouping."""
    number = _decimal(value)
    if number is None or number != number.to_integral_value():
        return EMPTY
    return format_number(number, 0)


@register.filter
def percent(value: Any) -> str:
    """A signed percentage with two decimals (+1.25%); nothing known is a dash."""
    number = _decimal(value)
    if number is None:
        return EMPTY
    text = format_number(abs(number), 2)
    sign = "+" if number > 0 else "-" if number < 0 else ""
    return f"{sign}{text}%"


@register.filter
def utc(value: Any, pattern: str = "Y-m-d H:i") -> str:
    """A time in UTC, date and time apart (2027-01-04 01:10); the column head says "UTC".
    Takes a datetime or the ISO text the JSON helpers produce."""
    if value in (None, ""):
        return EMPTY
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return EMPTY
    if not isinstance(moment, datetime) or timezone.is_naive(moment):
        return EMPTY
    return dateformat.format(moment.astimezone(UTC), pattern)


@register.filter
def utc_clock(value: Any) -> str:
    """An API time (RFC 3339, as the trade tape carries it) as a UTC clock time."""
    try:
        moment = time_parse(value)
    except TimeFormatError:
        return EMPTY
    return dateformat.format(moment, "H:i:s")


@register.filter
def order_status(code: Any) -> str:
    return order_status_text(code)


@register.filter
def cancel_reason(code: Any) -> str:
    return cancel_reason_text(code)


@register.filter
def listing_status(code: Any) -> str:
    """A capacity listing's status (active / expiring / expired) in words."""
    if code in ListingStatus.values:
        return str(ListingStatus(code).label)
    return str(code or "")


@register.filter
def direction(change: Any) -> str:
    """CSS class for a signed change: up, down or flat."""
    number = _decimal(change)
    if number is None:
        return "flat"
    return "up" if number > 0 else "down" if number < 0 else "flat"
