"""Template helpers of the delivery partials: the provider dashboard's delivery section
(``web/_provider_delivery.html``) loads its own figures, so the dashboard needs one include line;
and exact money for the small sums a single request costs."""

from __future__ import annotations

from typing import Any

from django import template

from exchange.markets.currencies import CURRENCY_DECIMALS
from exchange.web.delivery_selectors import LOT_STATUSES, provider_delivery
from exchange.web.templatetags.web import currency_decimals, format_number

register = template.Library()


@register.simple_tag(takes_context=True)
def provider_delivery_panel(context: template.Context) -> dict[str, Any]:
    return provider_delivery(user=context["request"].user)


@register.filter
def money_exact(value: Any, currency: str) -> str:
    """Money with at least the currency's decimals and every ledger digit beyond them: one
    request costs fractions of a cent (48 tokens at 8 CNY/MTok = 0.000384 CNY), which the
    currency's two decimals would show as 0.00."""
    minimum = currency_decimals(currency)
    return format_number(value, minimum, CURRENCY_DECIMALS.get(currency, minimum))


@register.filter
def milliseconds(value: Any) -> str:
    return format_number(value, 0) + " ms" if value is not None else format_number(None, 0)


@register.filter
def lot_status(code: Any) -> str:
    """A lot's status (open / expired / closed) in words."""
    return str(LOT_STATUSES.get(code, code or ""))
