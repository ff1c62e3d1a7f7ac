"""Order, fill and capacity reads. Another user's object is "not found"."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy

from accounts.models import User
from exchange.db import unique_row
from exchange.errors import OrderNotFound
from exchange.markets.models import Market
from orders.models import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    MarketEngineState,
    Order,
    Trade,
)


def order_get(*, user: User, order_id: int) -> Order:
    order = unique_row(Order.objects.select_related("market").filter(user=user, id=order_id))
    if order is None:
        raise OrderNotFound(gettext_lazy("No such order."), details={"order_id": order_id})
    return order


def order_get_by_client_id(*, user: User, client_order_id: str) -> Order:
    order = unique_row(
        Order.objects.select_related("market").filter(user=user, client_order_id=client_order_id)
    )
    if order is None:
        raise OrderNotFound(
            gettext_lazy("No such order."), details={"client_order_id": client_order_id}
        )
    return order


def order_list(
    *,
    user: User,
    market: Market | None = None,
    status: str = "all",
    client_order_id: str | None = None,
) -> QuerySet[Order]:
    orders = Order.objects.select_related("market").filter(user=user)
    if market is not None:
        orders = orders.filter(market=market)
    if status == "open":
        orders = orders.filter(status__in=OPEN_STATUSES)
    elif status == "closed":
        orders = orders.filter(status__in=CLOSED_STATUSES)
    if client_order_id is not None:
        orders = orders.filter(client_order_id=client_order_id)
    return orders


def fill_list(*, user: User, market: Market | None = None) -> QuerySet[Trade]:
    trades = Trade.objects.select_related("market").filter(Q(buyer=user) | Q(seller=user))
    if market is not None:
        trades = trades.filter(market=market)
    return trades


def engine_state_get(*, market: Market) -> MarketEngineState | None:
    return unique_row(MarketEngineState.objects.filter(market=market))
