"""Template helpers of the endpoint partials (``web/_provider_endpoints.html`` on the provider
dashboard, ``web/_market_providers.html`` on the trade page): each partial loads its own data,
so the page that includes it needs nothing but one include line."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template

from exchange.delivery.endpoints.selectors import endpoint_list, event_list, market_provider_stats
from exchange.markets.models import Market
from exchange.web.templatetags.web import EMPTY, format_number

register = template.Library()
NOTICES_SHOWN = 5


@register.simple_tag(takes_context=True)
def provider_endpoints_panel(context: template.Context) -> dict[str, Any]:
    """The provider's endpoints, recent notices, and the form (the view's, with its errors,
    when it re-renders the partial after a post)."""
    from exchange.delivery.endpoints.web import EndpointForm

    user = context["request"].user
    return {
        "endpoints": list(endpoint_list(user=user)),
        "notices": list(event_list(user=user)[:NOTICES_SHOWN]),
        "form": context.get("endpoint_form") or EndpointForm(),
    }


@register.simple_tag
def market_providers(market: Market) -> list[dict[str, Any]]:
    return market_provider_stats(market=market)


@register.filter
def uptime(value: Any) -> str:
    """A ratio (0..1, as the statistics give it) as a percentage with two decimals."""
    if value is None:
        return EMPTY
    return f"{format_number(Decimal(value) * 100, 2, 2)}%"


@register.filter
def rate(value: Any) -> str:
    """Tokens per second, to a tenth."""
    return EMPTY if value is None else format_number(Decimal(value), 1, 1)
