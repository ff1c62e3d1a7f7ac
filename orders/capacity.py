"""Provider capacity listings and buyers' allocations.

A listing issues its tokens to the provider's ledger account and, with an ask price, places a
GTC sell order for them in the same call. At ``available_until`` the provider's open asks in
that market are cancelled and the listing's unsold tokens are retired (``capacity_expire_due``,
a Celery periodic task; it runs in two passes because cancels go through the engine runner).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy

from accounts.models import Profile, User
from accounts.onboarding import provider_require_approved
from exchange.delivery.endpoints.selectors import ask_check as endpoint_ask_check
from exchange.delivery.escrow.selectors import lot_list
from exchange.errors import ExchangeError, Forbidden, ValidationFailed
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger import services as ledger
from exchange.markets.currencies import TOKENS_PER_MTOK
from exchange.markets.models import Market
from exchange.times import time_text
from orders.models import OPEN_STATUSES, CapacityListing, ListingStatus, Order
from orders.services import (
    engine_notify,
    market_check_accepting,
    order_cancel,
    order_hold,
    order_journal,
    order_request_parse,
)
from orders.units import lots_to_quantity, quantity_to_lots, ticks_to_price, units_to_amount

logger = logging.getLogger(__name__)

LIVE_LISTING_STATUSES = (ListingStatus.ACTIVE, ListingStatus.EXPIRING)


class ListingTooLarge(ValidationFailed):
    code = "listing_too_large"


class ListingTooLong(ValidationFailed):
    code = "available_until_too_far"


class CapacityLimitReached(Forbidden):
    """The provider's live listings in the market already promise the most allowed."""

    code = "capacity_limit_reached"


class TooManyListings(Forbidden):
    code = "too_many_listings"


def _limits_check_request(*, market: Market, lots: int, available_until: datetime) -> None:
    """The limits a request alone can break (before anything is read or locked)."""
    tokens = lots * market.tokens_per_lot
    if tokens > settings.CAPACITY_MAX_LISTING_TOKENS:
        raise ListingTooLarge(
            format_lazy(
                gettext_lazy("A listing may offer at most {tokens} tokens ({quantity} MTok)."),
                tokens=settings.CAPACITY_MAX_LISTING_TOKENS,
                quantity=_mtok(settings.CAPACITY_MAX_LISTING_TOKENS),
            ),
            details={"max_tokens": settings.CAPACITY_MAX_LISTING_TOKENS},
        )
    horizon = timezone.now() + timedelta(days=settings.CAPACITY_MAX_HORIZON_DAYS)
    if available_until > horizon:
        raise ListingTooLong(
            format_lazy(
                gettext_lazy("available_until may be at most {days} days ahead."),
                days=settings.CAPACITY_MAX_HORIZON_DAYS,
            ),
            details={"max_days": settings.CAPACITY_MAX_HORIZON_DAYS},
        )


def _limits_check_provider(*, user: User, market: Market, lots: int) -> None:
    """The provider's totals: live listings (all markets) and live capacity in ``market``.

    Runs inside the listing's transaction after ``_provider_lock``: concurrent listings of one
    provider are counted one after the other, so together they cannot pass a limit either."""
    live = CapacityListing.objects.filter(provider=user, status__in=LIVE_LISTING_STATUSES)
    totals = live.aggregate(count=Count("id"), lots=Sum("quantity_lots", filter=Q(market=market)))
    if totals["count"] >= settings.CAPACITY_MAX_ACTIVE_LISTINGS:
        raise TooManyListings(
            format_lazy(
                gettext_lazy("A provider may have at most {count} live listings."),
                count=settings.CAPACITY_MAX_ACTIVE_LISTINGS,
            ),
            details={"max_listings": settings.CAPACITY_MAX_ACTIVE_LISTINGS},
        )
    outstanding = (totals["lots"] or 0) * market.tokens_per_lot
    if outstanding + lots * market.tokens_per_lot > settings.CAPACITY_MAX_OUTSTANDING_TOKENS:
        raise CapacityLimitReached(
            format_lazy(
                gettext_lazy(
                    "Your live listings in this market would offer more than {tokens} tokens "
                    "({quantity} MTok); {listed} are listed now."
                ),
                tokens=settings.CAPACITY_MAX_OUTSTANDING_TOKENS,
                quantity=_mtok(settings.CAPACITY_MAX_OUTSTANDING_TOKENS),
                listed=outstanding,
            ),
            details={
                "max_tokens": settings.CAPACITY_MAX_OUTSTANDING_TOKENS,
                "listed_tokens": outstanding,
            },
        )


def _mtok(tokens: int) -> str:
    return format((Decimal(tokens) / TOKENS_PER_MTOK).normalize(), "f")


def _provider_lock(user: User) -> None:
    """Serialise one provider's listings (its profile row; taken before any ledger row)."""
    Profile.objects.select_for_update().filter(user=user).values_list("id", flat=True).first()


def capacity_list(
    *,
    user: User,
    market: Market,
    quantity: str,
    available_until: datetime,
    ask_price: str | None = None,
) -> CapacityListing:
    provider_require_approved(user=user)
    market_check_accepting(market)
    lots = quantity_to_lots(market, quantity)
    if available_until <= timezone.now():
        raise ValidationFailed(gettext_lazy("available_until must be in the future."))
    _limits_check_request(market=market, lots=lots, available_until=available_until)
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
        _provider_lock(user)
        _limits_check_provider(user=user, market=market, lots=lots)
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


def listing_figures_many(listings: list[CapacityListing]) -> dict[int, dict[str, int]]:
    """Sold, resting, unsold and retired lots of each listing: ONE aggregate query over the
    listings' asks, whatever their number (it was three queries per listing: 4,600 listings
    took 8 s, #16 finding 4)."""
    totals = {
        row["capacity_listing_id"]: row
        for row in Order.objects.filter(capacity_listing__in=[x.id for x in listings])
        .values("capacity_listing_id")
        .annotate(
            sold=Sum("filled_lots"),
            resting=Sum(F("quantity_lots") - F("filled_lots"), filter=Q(status__in=OPEN_STATUSES)),
        )
        .order_by()
    }
    figures = {}
    for listing in listings:
        row = totals.get(listing.id, {})
        sold, resting = row.get("sold") or 0, row.get("resting") or 0
        retired_lots = listing.retired_tokens // listing.market.tokens_per_lot
        unsold = max(0, listing.quantity_lots - sold - retired_lots)
        figures[listing.id] = {
            "sold": sold, "resting": resting, "unsold": unsold, "retired": retired_lots
        }  # fmt: skip
    return figures


def _listing_figures(listing: CapacityListing) -> dict[str, int]:
    return listing_figures_many([listing])[listing.id]


def listing_json(listing: CapacityListing, figures: dict[str, int] | None = None) -> dict[str, Any]:
    """One listing as the API shows it; ``figures`` from ``listing_figures_many`` (else read)."""
    market = listing.market
    figures = figures or _listing_figures(listing)
    return {
        "id": listing.id,
        "market": market.symbol,
        "quantity": lots_to_quantity(market, listing.quantity_lots),
        "tokens": listing.quantity_lots * market.tokens_per_lot,
        "available_until": time_text(listing.available_until),
        "ask_price": ticks_to_price(market, listing.ask_price_ticks),
        "status": listing.status,
        "sold_quantity": lots_to_quantity(market, figures["sold"]),
        "resting_quantity": lots_to_quantity(market, figures["resting"]),
        "unsold_quantity": lots_to_quantity(market, figures["unsold"]),
        "retired_quantity": lots_to_quantity(market, figures["retired"]),
        "created_at": time_text(listing.created_at),
    }


def listing_list(*, user: User) -> QuerySet[CapacityListing]:
    """The provider's listings, newest first (a page of it goes to ``listings_json``)."""
    return CapacityListing.objects.select_related("market").filter(provider=user).order_by("-id")


def listings_json(listings: list[CapacityListing]) -> list[dict[str, Any]]:
    """A page of listings with their figures: two queries (the page, the figures)."""
    figures = listing_figures_many(listings)
    return [listing_json(listing, figures[listing.id]) for listing in listings]


def allocation_list_json(*, user: User, limit: int = 500) -> list[dict[str, Any]]:
    """The user's lots (open ones first, earliest expiry first): market, provider, escrow price,
    bought / delivered / credited / reserved / moved / unconsumed / remaining tokens, expiry.

    The keys of the earlier per-provider rows stay (``bought_quantity``, ``consumed_tokens``,
    ``market_balance_tokens``, ``available_until`` = the lot's expiry): the shape only grew.
    """
    lots = list(lot_list(user=user)[:limit])
    sellers = {
        p.user_id: p.display_name or f"Provider #{p.user_id}"
        for p in Profile.objects.filter(user_id__in={lot.provider_id for lot in lots})
    }
    balances = {
        symbol: ledger_selectors.balance_get(user=user, asset=symbol)
        for symbol in {lot.market.symbol for lot in lots}
    }
    now = timezone.now()
    result = []
    for lot in lots:
        market = lot.market
        balance = balances[market.symbol]
        if lot.closed_at is not None:
            status = "closed"
        elif lot.expires_at <= now:
            status = "expired"  # its unconsumed tokens are retired by the next expiry run
        else:
            status = "open"
        result.append(
            {
                "lot_id": lot.id,
                "market": market.symbol,
                "provider_id": lot.provider_id,
                "provider": sellers.get(lot.provider_id, ""),
                "price": ticks_to_price(market, lot.price_ticks),
                "bought_quantity": format(
                    (Decimal(lot.bought_tokens) / TOKENS_PER_MTOK).normalize(), "f"
                ),
                "bought_tokens": lot.bought_tokens,
                "delivered_tokens": lot.delivered_tokens,
                "credited_tokens": lot.credited_tokens,
                "reserved_tokens": lot.reserved_tokens,
                "moved_tokens": lot.moved_tokens,
                "unconsumed_tokens": lot.unconsumed_tokens,
                "remaining_tokens": lot.remaining_tokens,
                "consumed_tokens": lot.delivered_tokens + lot.credited_tokens,
                "escrow": units_to_amount(market, lot.outstanding_units),
                "market_balance_tokens": balance.available + balance.held,
                "expires_at": time_text(lot.expires_at),
                "available_until": time_text(lot.expires_at),
                "status": status,
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
                except Exception:  # noqa: S112 - it ended meanwhile; nothing to cancel  # nosec B112
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
