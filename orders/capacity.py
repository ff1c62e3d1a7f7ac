"""Provider capacity listings and buyers' allocations.

A listing issues its tokens to the provider's ledger account and, with an ask price, places a
GTC sell order for them in the same call. At ``available_until`` the provider's open asks in
that market are cancelled and the listing's unsold tokens are retired (``capacity_expire_due``,
a Celery periodic task; it runs in two passes because cancels go through the engine runner).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Max, Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy

from accounts.models import Profile, User
from exchange.delivery.endpoints.selectors import ask_check as endpoint_ask_check
from exchange.errors import ExchangeError, Forbidden, ValidationFailed
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger import services as ledger
from exchange.markets.models import Market
from orders.models import OPEN_STATUSES, CapacityListing, ListingStatus, Order, Trade
from orders.services import (
    engine_notify,
    market_check_accepting,
    order_cancel,
    order_hold,
    order_journal,
    order_request_parse,
)
from orders.units import lots_to_quantity, quantity_to_lots, ticks_to_price

logger = logging.getLogger(__name__)


def _require_provider(user: User) -> None:
    profile = Profile.objects.filter(user=user).first()
    if profile is None or not profile.is_provider:
        raise Forbidden(gettext_lazy("Only providers can list capacity."))


def capacity_list(
    *,
    user: User,
    market: Market,
    quantity: str,
    available_until: datetime,
    ask_price: str | None = None,
) -> CapacityListing:
    _require_provider(user)
    market_check_accepting(market)
    lots = quantity_to_lots(market, quantity)
    if available_until <= timezone.now():
        raise ValidationFailed(gettext_lazy("available_until must be in the future."))
    ask_request = None
    if ask_price is not None:
        ask_request = order_request_parse(
            market=market, side="sell", type="limit", price=ask_price, quantity=quantity
        )
        # An ask needs a live delivery endpoint in the market (none yet, or down: refused).
        endpoint_ask_check(user=user, market=market, listing=True)
    ask_hold = order_hold(ask_request) if ask_request is not None else None
    # One transaction: the listing, its tokens and its ask exist together or not at all.
    with transaction.atomic(durable=True):
        listing = CapacityListing.objects.create(
            provider=user,
            market=market,
            quantity_lots=lots,
            available_until=available_until,
            ask_price_ticks=ask_request.price_ticks if ask_request else None,
        )
        ledger.capacity_issue(
            user=user,
            market=market,
            tokens=lots * market.tokens_per_lot,
            reference=f"listing:{listing.id}",
            idempotency_key=f"listing:{listing.id}:issue",
        )
        if ask_request is not None and ask_hold is not None:
            protection, hold_asset, hold_amount = ask_hold
            order_journal(
                user=user,
                request=ask_request,
                protection=protection,
                hold_asset=hold_asset,
                hold_amount=hold_amount,
                capacity_listing_id=listing.id,
            )
    if ask_request is not None:
        engine_notify(market=market)
    return listing


def _listing_figures(listing: CapacityListing) -> dict[str, int]:
    orders = Order.objects.filter(capacity_listing=listing)
    sold = orders.aggregate(total=Sum("filled_lots"))["total"] or 0
    resting = sum(o.quantity_lots - o.filled_lots for o in orders.filter(status__in=OPEN_STATUSES))
    retired_lots = listing.retired_tokens // listing.market.tokens_per_lot
    unsold = max(0, listing.quantity_lots - sold - retired_lots)
    return {"sold": sold, "resting": resting, "unsold": unsold, "retired": retired_lots}


def listing_json(listing: CapacityListing) -> dict[str, Any]:
    market = listing.market
    figures = _listing_figures(listing)
    return {
        "id": listing.id,
        "market": market.symbol,
        "quantity": lots_to_quantity(market, listing.quantity_lots),
        "tokens": listing.quantity_lots * market.tokens_per_lot,
        "available_until": listing.available_until.isoformat(),
        "ask_price": ticks_to_price(market, listing.ask_price_ticks),
        "status": listing.status,
        "sold_quantity": lots_to_quantity(market, figures["sold"]),
        "resting_quantity": lots_to_quantity(market, figures["resting"]),
        "unsold_quantity": lots_to_quantity(market, figures["unsold"]),
        "retired_quantity": lots_to_quantity(market, figures["retired"]),
        "created_at": listing.created_at.isoformat(),
    }


def listing_list_json(*, user: User) -> list[dict[str, Any]]:
    listings = CapacityListing.objects.select_related("market").filter(provider=user)
    return [listing_json(listing) for listing in listings]


def allocation_list_json(*, user: User) -> list[dict[str, Any]]:
    """Tokens bought per market and provider, and the provider's latest listing end."""
    rows = (
        Trade.objects.filter(buyer=user)
        .values("market_id", "seller_id")
        .annotate(lots=Sum("quantity_lots"))
        .order_by("market_id", "seller_id")
    )
    markets = Market.objects.in_bulk({row["market_id"] for row in rows})
    sellers = {
        p.user_id: p.display_name or f"Provider #{p.user_id}"
        for p in Profile.objects.select_related("user").filter(
            user_id__in={row["seller_id"] for row in rows}
        )
    }
    result = []
    for row in rows:
        market = markets[row["market_id"]]
        until = CapacityListing.objects.filter(
            provider_id=row["seller_id"], market=market
        ).aggregate(until=Max("available_until"))["until"]
        balance = ledger_selectors.balance_get(user=user, asset=market.symbol)
        result.append(
            {
                "market": market.symbol,
                "provider_id": row["seller_id"],
                "provider": sellers.get(row["seller_id"], ""),
                "bought_quantity": lots_to_quantity(market, row["lots"]),
                "bought_tokens": row["lots"] * market.tokens_per_lot,
                "consumed_tokens": 0,
                "market_balance_tokens": balance.available + balance.held,
                "available_until": until.isoformat() if until else None,
            }
        )
    return result


def _listing_retire(listing: CapacityListing) -> None:
    market = listing.market
    with transaction.atomic(durable=True):
        figures = _listing_figures(listing)
        available = ledger_selectors.balance_get(
            user=listing.provider, asset=market.symbol
        ).available
        tokens = min(figures["unsold"] * market.tokens_per_lot, available)
        if tokens > 0:
            ledger.capacity_retire(
                user=listing.provider,
                market=market,
                tokens=tokens,
                reference=f"listing:{listing.id}",
                idempotency_key=f"listing:{listing.id}:retire",
            )
        listing.retired_tokens = tokens
        listing.status = ListingStatus.EXPIRED
        listing.save(update_fields=["retired_tokens", "status"])


def capacity_expire_due(*, now: datetime | None = None) -> int:
    """Cancel asks of due listings (first pass), then retire unsold tokens (second pass)."""
    moment = now or timezone.now()
    handled = 0
    due = CapacityListing.objects.select_related("market", "provider").filter(
        status__in=(ListingStatus.ACTIVE, ListingStatus.EXPIRING), available_until__lte=moment
    )
    for listing in due:
        # The provider's asks in the market go with the listing, unless another of their
        # listings in the market is still live: then only this listing's own asks do.
        other_live = (
            CapacityListing.objects.filter(
                provider=listing.provider,
                market=listing.market,
                status=ListingStatus.ACTIVE,
                available_until__gt=moment,
            )
            .exclude(id=listing.id)
            .exists()
        )
        open_asks = Order.objects.filter(
            user=listing.provider, market=listing.market, side="sell", status__in=OPEN_STATUSES
        )
        if other_live:
            open_asks = open_asks.filter(capacity_listing=listing)
        if open_asks.exists():
            for order_id in open_asks.values_list("id", flat=True):
                try:
                    order_cancel(user=listing.provider, order_id=order_id)
                except Exception:  # noqa: S112 - it ended meanwhile; nothing to cancel
                    continue
            if listing.status != ListingStatus.EXPIRING:
                listing.status = ListingStatus.EXPIRING
                listing.save(update_fields=["status"])
            continue
        try:
            _listing_retire(listing)
        except ExchangeError:
            # e.g. the provider placed an ask meanwhile: the next run tries again
            logger.warning("retiring listing %s failed; will retry", listing.id, exc_info=True)
            continue
        handled += 1
    return handled
