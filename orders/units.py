"""The one parser from public decimals (price per MTok, quantity in MTok) to ticks and lots."""

from __future__ import annotations

from decimal import Decimal, localcontext

from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy

from exchange.errors import ValidationFailed
from exchange.input_bounds import decimal_parse
from exchange.markets.models import Market

MAX_TICKS = 10**12


def parse_decimal(value: object, field: str) -> Decimal:
    """Bounded before any arithmetic (``exchange.input_bounds``): the divisions below are exact."""
    return decimal_parse(value, field=field)


def price_to_ticks(market: Market, value: object) -> int:
    price = parse_decimal(value, "price")
    if price <= 0:
        raise ValidationFailed(
            gettext_lazy("price must be positive."), details={"price": "not_positive"}
        )
    with localcontext() as context:
        context.prec = 80  # exact division: 28 digits could round an off-tick price onto a tick
        ticks = price / market.tick_size
    if ticks > MAX_TICKS:
        raise ValidationFailed(gettext_lazy("price is too large."), details={"price": "too_large"})
    if ticks != ticks.to_integral_value():
        raise ValidationFailed(
            format_lazy(
                gettext_lazy("price {price} is not a multiple of the tick size {tick}."),
                price=price,
                tick=market.tick_size.normalize(),
            ),
            details={"price": "off_tick"},
        )
    return int(ticks)


def quantity_to_lots(market: Market, value: object) -> int:
    quantity = parse_decimal(value, "quantity")
    if quantity <= 0:
        raise ValidationFailed(
            gettext_lazy("quantity must be positive."), details={"quantity": "not_positive"}
        )
    with localcontext() as context:
        context.prec = 80
        lots = quantity / market.lot_size
    if lots != lots.to_integral_value():
        raise ValidationFailed(
            format_lazy(
                gettext_lazy(
                    "quantity {quantity} MTok is not a multiple of the lot size {lot} MTok."
                ),
                quantity=quantity,
                lot=market.lot_size.normalize(),
            ),
            details={"quantity": "off_lot"},
        )
    if quantity < market.min_quantity:
        raise ValidationFailed(
            format_lazy(
                gettext_lazy("quantity {quantity} MTok is below the minimum {minimum} MTok."),
                quantity=quantity,
                minimum=market.min_quantity.normalize(),
            ),
            details={"quantity": "below_minimum"},
        )
    if lots > 10**12:
        raise ValidationFailed(
            gettext_lazy("quantity is too large."), details={"quantity": "too_large"}
        )
    return int(lots)


def ticks_to_price(market: Market, ticks: int | None) -> str | None:
    if ticks is None:
        return None
    return format((market.tick_size * ticks).normalize(), "f")


def lots_to_quantity(market: Market, lots: int) -> str:
    return format((market.lot_size * lots).normalize(), "f") if lots else "0"


def units_to_amount(market: Market, units: int) -> str:
    return format(Decimal(units).scaleb(-market.quote_decimals).normalize(), "f") if units else "0"


def notional_units(market: Market, ticks: int, lots: int) -> int:
    return ticks * lots * market.units_per_tick_lot
