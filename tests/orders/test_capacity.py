from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from exchange.runner.embedded import inline_process
from exchange.times import time_text
from orders.capacity import capacity_expire_due
from orders.models import CapacityListing
from tests.delivery.endpoints.helpers import live_endpoint
from tests.orders.conftest import SYMBOL, balance, place

pytestmark = pytest.mark.django_db


def test_provider_lists_capacity_with_an_ask_and_a_buyer_takes_part(market, trader, fund) -> None:
    provider, buyer = trader(role="provider"), trader(role="buyer")
    live_endpoint(provider.user, market)  # an ask needs a live delivery endpoint
    fund(buyer.user, cny=100)
    until = timezone.now() + timedelta(hours=1)
    response = provider.post(
        "/api/v1/capacity",
        {
            "market": SYMBOL,
            "quantity": "3",
            "available_until": until.isoformat(),
            "ask_price": "8.00",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert balance(provider.user, SYMBOL) == (0, 3_000_000)

    place(buyer, side="buy", price="8.00", quantity="1.25")
    listing = provider.get("/api/v1/capacity").json()["results"][0]
    assert (listing["sold_quantity"], listing["resting_quantity"], listing["unsold_quantity"]) == (
        "1.25",
        "1.75",
        "1.75",
    )
    allocations = buyer.get("/api/v1/allocations").json()
    assert len(allocations) == 1
    assert allocations[0]["market"] == SYMBOL
    assert allocations[0]["provider_id"] == provider.user.id
    assert allocations[0]["bought_tokens"] == 1_250_000
    assert allocations[0]["available_until"] == time_text(until)
    # the allocation is the buyer's lot: its price, expiry (the listing's end) and counters
    lot = allocations[0]
    assert (lot["price"], lot["expires_at"], lot["status"]) == ("8", time_text(until), "open")
    assert (lot["delivered_tokens"], lot["credited_tokens"], lot["remaining_tokens"]) == (
        0,
        0,
        1_250_000,
    )
    assert (lot["bought_quantity"], lot["escrow"]) == ("1.25", "10")


def test_only_providers_list_capacity(market, trader) -> None:
    buyer = trader(role="buyer")
    response = buyer.post(
        "/api/v1/capacity",
        {
            "market": SYMBOL,
            "quantity": "1",
            "available_until": (timezone.now() + timedelta(hours=1)).isoformat(),
        },
        format="json",
    )
    assert response.status_code == 403
    assert CapacityListing.objects.count() == 0


def test_expiry_cancels_asks_then_retires_unsold_tokens(market, trader, fund) -> None:
    provider, buyer = trader(role="provider"), trader(role="buyer")
    live_endpoint(provider.user, market)  # an ask needs a live delivery endpoint
    fund(buyer.user, cny=100)
    provider.post(
        "/api/v1/capacity",
        {
            "market": SYMBOL,
            "quantity": "2",
            "available_until": (timezone.now() + timedelta(hours=1)).isoformat(),
            "ask_price": "8.00",
        },
        format="json",
    )
    place(buyer, side="buy", price="8.00", quantity="0.5")
    CapacityListing.objects.update(available_until=timezone.now() - timedelta(seconds=1))
    assert capacity_expire_due() == 0  # first pass: the ask is being cancelled
    inline_process(market)
    assert capacity_expire_due() == 1
    listing = CapacityListing.objects.get()
    assert listing.status == "expired"
    assert listing.retired_tokens == 1_500_000
    assert balance(provider.user, SYMBOL) == (0, 0)
    assert balance(buyer.user, SYMBOL) == (500_000, 0)
    assert capacity_expire_due() == 0  # idempotent


def test_expiry_keeps_the_asks_of_another_live_listing(market, trader, fund) -> None:
    provider = trader(role="provider")
    live_endpoint(provider.user, market)  # an ask needs a live delivery endpoint
    soon = (timezone.now() + timedelta(hours=1)).isoformat()
    later = (timezone.now() + timedelta(hours=5)).isoformat()
    for until, price in ((soon, "8.00"), (later, "9.00")):
        response = provider.post(
            "/api/v1/capacity",
            {"market": SYMBOL, "quantity": "1", "available_until": until, "ask_price": price},
            format="json",
        )
        assert response.status_code == 201
    first = CapacityListing.objects.order_by("id").first()
    CapacityListing.objects.filter(id=first.id).update(
        available_until=timezone.now() - timedelta(seconds=1)
    )
    capacity_expire_due()
    inline_process(market)
    assert capacity_expire_due() == 1
    statuses = dict(CapacityListing.objects.values_list("id", "status"))
    assert statuses[first.id] == "expired"
    live_ask = provider.get("/api/v1/orders?status=open").json()["results"]
    assert [o["price"] for o in live_ask] == ["9"]
    assert balance(provider.user, SYMBOL) == (0, 1_000_000)
