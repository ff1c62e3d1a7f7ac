"""Review proofs (helper 11) of escrow findings still open (the fixed ones moved to
tests/delivery/escrow)."""

from __future__ import annotations

import pytest

from exchange.delivery.escrow.models import Lot
from orders.models import Order
from tests.delivery.escrow.conftest import OUT

pytestmark = pytest.mark.django_db(transaction=True)


def test_tokens_held_without_lots_are_not_sold_as_the_holders_own_capacity(
    pair, provider, make_trader
):
    from exchange.delivery.endpoints.models import Endpoint
    from exchange.ledger import services as ledger

    # given: a buyer holding 1 MTok of output with no lot behind it — as every balance bought
    # before this deployment (no migration creates their lots), or a staff correction
    legacy = make_trader(cny=0)
    ledger.adjustment_post(
        user=legacy.user, asset=OUT, amount=1_000_000, reason="bought before delivery",
        staff_user=None, idempotency_key="review:legacy-tokens",
    )  # fmt: skip
    second = make_trader(cny=100)

    # when: the holder offers them and another buyer would take them
    ask = legacy.order(market=OUT, side="sell", price="7.50", quantity="1")
    assert ask["status"] == "open"
    bid = second.order(market=OUT, side="buy", price="7.50", quantity="1")

    # then: the buyer's 7.50 CNY did not buy a lot "provided" by a user with no endpoint, which
    # the gateway can never serve and whose escrow take-or-pay hands to the reseller: the ask
    # is cancelled as undeliverable (the holder has no live listing), the bid rests unfilled
    assert bid["status"] == "open"
    assert not Lot.objects.filter(holder=second.user).exists()
    assert not Endpoint.objects.filter(provider=legacy.user).exists()
    refused = Order.objects.get(id=ask["id"])
    assert (refused.status, refused.cancel_reason) == ("cancelled", "undeliverable")
    # every lot sold is backed by an endpoint's provider (only the listed provider's)
    assert {lot.provider_id for lot in Lot.objects.all()} <= set(
        Endpoint.objects.values_list("provider_id", flat=True)
    )
