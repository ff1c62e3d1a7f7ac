"""Review proofs (helper 11) of escrow findings still open (the fixed ones moved to
tests/delivery/escrow)."""

from __future__ import annotations

import pytest

from exchange.delivery.escrow.models import Lot
from tests.delivery.escrow.conftest import OUT

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="review finding: lot-less tokens sell as the holder's own escrowed capacity",
)
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

    # when: the holder resells them and another buyer takes them
    assert legacy.order(market=OUT, side="sell", price="7.50", quantity="1")["status"] == "open"
    assert second.order(market=OUT, side="buy", price="7.50", quantity="1")["status"] == "filled"

    # then: the buyer's 7.50 CNY did not buy a lot "provided" by a user with no endpoint, which
    # the gateway can never serve and whose escrow take-or-pay hands to the reseller
    lot = Lot.objects.get(holder=second.user)
    assert Endpoint.objects.filter(provider_id=lot.provider_id).exists(), (
        f"lot {lot.id}: provider is the reseller (user {lot.provider_id}), escrow "
        f"{lot.escrow_units}, expires {lot.expires_at:%Y-%m-%d}"
    )
