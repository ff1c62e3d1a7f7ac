"""Escrow end to end: trade → partial delivery → SLA credit → resale of part → expiry; the
provider is paid exactly what was bought less credits (less the seller fee), the buyer gets back
exactly the credits, and the ledger audit holds at every step."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from exchange.delivery.escrow.models import Lot, ReservationStatus
from exchange.delivery.escrow.selectors import provider_escrow_summary
from exchange.delivery.escrow.services import (
    escrow_release_due,
    holdings_get,
    lots_expire_due,
    reservation_open,
    reservation_settle,
)
from exchange.ledger.models import SystemAccount
from exchange.ledger.services import fee_for
from tests.delivery.escrow.conftest import (
    CNY,
    IN,
    MTOK,
    OUT,
    assert_audit_ok,
    balance,
    escrow_balance,
    lot_state,
    system_balance,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_escrow_lifecycle_pays_the_provider_bought_less_credits(pair, provider, make_trader):
    buyer = make_trader(cny=1000)
    second = make_trader(cny=1000)
    provider_cny_before = balance(provider.user, "CNY")

    # given: the buyer takes 2 MTok of output at 8 and 1 MTok of input at 2 from the provider
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="2")["status"] == "filled"
    assert buyer.order(market=IN, side="buy", price="2.00", quantity="1")["status"] == "filled"

    # then: the notional sits in escrow, the provider is not paid yet, the buyer holds two lots
    assert escrow_balance() == 18 * CNY
    assert balance(provider.user, "CNY") == provider_cny_before
    out_lot = Lot.objects.get(holder=buyer.user, market=pair.output_market)
    in_lot = Lot.objects.get(holder=buyer.user, market=pair.input_market)
    assert (out_lot.provider_id, out_lot.bought_tokens, out_lot.escrow_units) == (
        provider.user.id, 2 * MTOK, 16 * CNY
    )  # fmt: skip
    assert (in_lot.bought_tokens, in_lot.escrow_units) == (MTOK, 2 * CNY)
    # buyer fee at trade time as before: 0.2% taker
    buyer_cny = (
        1000 * CNY - 16 * CNY - fee_for(notional=16 * CNY, rate=out_lot.market.taker_fee_rate)
    )
    buyer_cny -= 2 * CNY + fee_for(notional=2 * CNY, rate=in_lot.market.taker_fee_rate)
    assert balance(buyer.user, "CNY") == (buyer_cny, 0)
    [holding] = holdings_get(user=buyer.user, pair=pair)
    assert (holding.provider_id, holding.input_tokens, holding.output_tokens) == (
        provider.user.id, MTOK, 2 * MTOK
    )  # fmt: skip
    assert_audit_ok()

    # when: a request is served (800 prompt, 1000 completion tokens of a 1000 / 4096 worst case)
    first = reservation_open(
        user=buyer.user, pair=pair, provider_id=provider.user.id, input_tokens=1000,
        output_tokens=4096, key="gen-1",
    )  # fmt: skip
    assert balance(buyer.user, OUT) == (2 * MTOK - 4096, 4096)
    assert balance(buyer.user, IN) == (MTOK - 1000, 1000)
    settled = reservation_settle(
        reservation_id=first.id, input_tokens=800, output_tokens=1000, sla_missed=False
    )
    # then: the cost is the lots' escrow price: 1000 × 8 / MTok and 800 × 2 / MTok CNY
    assert (settled.output_cost_units, settled.input_cost_units, settled.credit_units) == (
        800_000, 160_000, 0
    )  # fmt: skip
    assert balance(buyer.user, OUT) == (2 * MTOK - 1000, 0)
    assert balance(buyer.user, IN) == (MTOK - 800, 0)
    assert system_balance(SystemAccount.DELIVERED, OUT) == 1000

    # and a request that misses the service level is credited in full (rate 1)
    missed = reservation_open(
        user=buyer.user, pair=pair, provider_id=provider.user.id, input_tokens=200,
        output_tokens=600, key="gen-2",
    )  # fmt: skip
    credit = reservation_settle(
        reservation_id=missed.id, input_tokens=200, output_tokens=500, sla_missed=True
    )
    assert (credit.output_cost_units, credit.input_cost_units, credit.credit_units) == (
        400_000, 40_000, 440_000
    )  # fmt: skip
    buyer_cny += 440_000
    assert balance(buyer.user, "CNY") == (buyer_cny, 0)
    missed.refresh_from_db()
    assert missed.status == ReservationStatus.SETTLED
    assert_audit_ok()

    # when: escrow is released, the provider gets the delivered tokens' cost less its fee
    assert escrow_release_due() == 2  # one payment per market
    fee_out, fee_in = (
        fee_for(notional=800_000, rate=out_lot.seller_fee_rate),
        fee_for(notional=160_000, rate=in_lot.seller_fee_rate),
    )
    assert balance(provider.user, "CNY")[0] == provider_cny_before[0] + 960_000 - fee_out - fee_in
    assert escrow_release_due() == 0  # nothing more owed: no second payment
    assert_audit_ok()

    # when: the buyer resells 0.5 MTok of output below the provider's ask, and another buys it
    assert buyer.order(market=OUT, side="sell", price="7.50", quantity="0.5")["status"] == "open"
    assert second.order(market=OUT, side="buy", price="7.50", quantity="0.5")["status"] == (
        "filled"
    )
    # then: the reseller is paid at once (less its maker fee), escrow is unchanged, and the
    # lot moved: a child lot for the second buyer keeps the provider, price and expiry
    proceeds = 375_000_000 - fee_for(notional=375_000_000, rate=out_lot.market.maker_fee_rate)
    buyer_cny += proceeds
    assert balance(buyer.user, "CNY") == (buyer_cny, 0)
    assert escrow_balance() == 18 * CNY - 960_000 - 440_000
    child = Lot.objects.get(holder=second.user)
    out_lot.refresh_from_db()
    assert (child.parent_id, child.provider_id, child.price_ticks, child.expires_at) == (
        out_lot.id, provider.user.id, out_lot.price_ticks, out_lot.expires_at
    )  # fmt: skip
    # 500,000 tokens after 1,500 drawn: floor(16e8 × 501,500 / 2e6) − floor(16e8 × 1,500 / 2e6)
    assert (child.bought_tokens, child.escrow_units) == (500_000, 400_000_000)
    assert (out_lot.moved_tokens, out_lot.moved_units) == (500_000, 400_000_000)
    assert_audit_ok()

    # when: everything expires unconsumed (take-or-pay)
    later = timezone.now() + timedelta(days=2)
    assert lots_expire_due(now=later) == 3
    # then: every lot is closed, escrow is empty, and the provider got bought − credited
    assert escrow_balance() == 0
    states = [lot_state(lot) for lot in Lot.objects.all()]
    assert all(state["closed"] for state in states)
    released = sum(s["released_units"] for s in states)
    assert released == 18 * CNY - 440_000
    fees = sum(
        fee_for(notional=lot.released_units, rate=lot.seller_fee_rate) for lot in Lot.objects.all()
    )
    assert sum(s["fee_units"] for s in states) == fees
    assert balance(provider.user, "CNY")[0] == provider_cny_before[0] + released - fees
    assert balance(buyer.user, OUT) == (0, 0)
    assert balance(buyer.user, IN) == (0, 0)
    assert balance(second.user, OUT) == (0, 0)
    assert balance(buyer.user, "CNY") == (buyer_cny, 0)  # refunded exactly the credits
    out_lot.refresh_from_db()
    assert (
        out_lot.delivered_tokens, out_lot.credited_tokens, out_lot.moved_tokens,
        out_lot.unconsumed_tokens,
    ) == (1000, 500, 500_000, 2 * MTOK - 1000 - 500 - 500_000)  # fmt: skip
    assert_audit_ok()

    # the provider's dashboard figures per market
    summary = {row.market.symbol: row for row in provider_escrow_summary(provider=provider.user)}
    out = summary[OUT]
    assert (out.sold_tokens, out.delivered_tokens, out.credited_tokens) == (2 * MTOK, 1000, 500)
    assert out.unconsumed_tokens == 2 * MTOK - 1500
    assert (out.escrow_units, out.credited_units) == (0, 400_000)
    assert out.released_units == 16 * CNY - 400_000
    assert summary[IN].released_units == 2 * CNY - 40_000
