from django.db.models import QuerySet

from exchange.db import unique_row
from exchange.errors import MarketNotFound
from exchange.markets.models import Market


def market_list() -> QuerySet[Market]:
    return Market.objects.order_by("symbol")


def market_get(*, symbol: str) -> Market:
    market = unique_row(Market.objects.filter(symbol=symbol))
    if market is None:
        raise MarketNotFound(f"Unknown market {symbol!r}.", details={"market": symbol})
    return market
