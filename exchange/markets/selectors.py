from django.db.models import QuerySet

from exchange.errors import NotFound
from exchange.markets.models import Market


def market_list() -> QuerySet[Market]:
    return Market.objects.order_by("symbol")


def market_get(*, symbol: str) -> Market:
    market = Market.objects.filter(symbol=symbol).first()
    if market is None:
        raise NotFound(f"Unknown market {symbol!r}.")
    return market
