"""The data migration that gives tokens bought before escrow existed their lots (review
finding 4): FIFO per buyer (the newest purchases are what is left), the seller as provider,
expiring with the seller's listing, no escrow (those trades paid the seller at once)."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from exchange.delivery.escrow.models import Lot
from exchange.ledger import services as ledger
from orders.models import CapacityListing, Trade
from tests.delivery.escrow.conftest import MTOK, OUT

pytestmark = pytest.mark.django_db(transaction=True)

migration = importlib.import_module("exchange.delivery.escrow.migrations.0004_historical_lots")


def test_lots_are_built_for_the_newest_trades_covering_the_holders_tokens(
    pair, provider, make_trader
):
    # given: a buyer of two 1 MTok trades whose lots did not exist (bought before escrow)
    buyer = make_trader(cny=100)
    for _ in range(2):
        assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == (
            "filled"
        )
    Lot.objects.filter(holder=buyer.user).delete()
    # and: it has used 1.5 MTok of them since (a staff correction stands in for it here)
    ledger.adjustment_post(
        user=buyer.user, asset=OUT, amount=-1_500_000, reason="consumed before delivery",
        staff_user=None, idempotency_key="test:historical-used",
    )  # fmt: skip

    # when: the migration runs, twice
    migration.lots_build(apps, None)
    migration.lots_build(apps, None)

    # then: one lot of 0.5 MTok from the newest trade, the provider's, expiring with its listing
    newest = Trade.objects.filter(buyer=buyer.user).order_by("-id").first()
    listing = CapacityListing.objects.get(provider=provider.user, market=pair.output_market)
    lots = list(Lot.objects.filter(holder=buyer.user))
    assert [
        (lot.trade_id, lot.provider_id, lot.bought_tokens, lot.escrow_units, lot.expires_at)
        for lot in lots
    ] == [(newest.id, provider.user.id, MTOK // 2, 0, listing.available_until)]
