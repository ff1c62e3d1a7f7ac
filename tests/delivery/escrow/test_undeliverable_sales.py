"""Tokens that no buyer could consume never change hands: lots past their expiry, capacity
whose listing ended, tokens held without lots (review findings 3 and 4). The runner cancels
such an ask when it would match ("undeliverable"), before the expiry tasks come round."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from exchange.delivery.escrow.models import Lot
from orders.models import CommandKind, Order, OrderCommand
from tests.delivery.escrow.conftest import (
    CNY,
    MTOK,
    OUT,
    assert_audit_ok,
    balance,
    escrow_balance,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_expired_lot_is_not_resold_before_the_expiry_task_runs(pair, provider, make_trader):
    # given: a buyer holding 1 MTok of output and asking 7.50 for half of it
    buyer = make_trader(cny=100)
    second = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    ask = buyer.order(market=OUT, side="sell", price="7.50", quantity="0.5")
    assert ask["status"] == "open"
    # and: the lot's expiry passed a moment ago; the beat task (every 60 s) has not run yet
    lot = Lot.objects.get(holder=buyer.user)
    Lot.objects.filter(id=lot.id).update(expires_at=timezone.now() - timedelta(seconds=5))
    second_cny = balance(second.user, "CNY")

    # when: another buyer's bid would take the resale ask
    bid = second.order(market=OUT, side="buy", price="7.50", quantity="0.5")

    # then: no trade; the ask was cancelled as undeliverable and its tokens are free again
    assert bid["status"] == "open"
    assert not Lot.objects.filter(holder=second.user).exists()
    order = Order.objects.get(id=ask["id"])
    assert (order.status, order.cancel_reason) == ("cancelled", "undeliverable")
    assert balance(buyer.user, OUT) == (1_000_000, 0)
    # the second buyer's 3.75 CNY (and fee) are held for its bid, not spent
    assert balance(second.user, "CNY")[0] + balance(second.user, "CNY")[1] == sum(second_cny)
    # and: the cancel is in the journal before the bid (a replay cancels it too)
    kinds = list(
        OrderCommand.objects.filter(market=pair.output_market, seq__isnull=False)
        .order_by("seq")
        .values_list("order_id", "kind")
    )
    assert kinds[-2:] == [(ask["id"], CommandKind.EXPIRE), (bid["id"], CommandKind.NEW)]
    assert_audit_ok()


def test_a_lot_about_to_expire_is_not_resold(pair, provider, make_trader, settings):
    settings.DELIVERY_LOT_MIN_LIFETIME_SECONDS = 600
    buyer = make_trader(cny=100)
    second = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    ask = buyer.order(market=OUT, side="sell", price="7.50", quantity="0.5")
    # the lot ends in 5 minutes: less than the minimum lifetime a sale must leave the buyer
    Lot.objects.filter(holder=buyer.user).update(expires_at=timezone.now() + timedelta(minutes=5))

    assert second.order(market=OUT, side="buy", price="7.50", quantity="0.5")["status"] == "open"

    assert Order.objects.get(id=ask["id"]).cancel_reason == "undeliverable"
    assert not Lot.objects.filter(holder=second.user).exists()


def test_an_incoming_sell_of_expired_lots_is_cancelled_not_matched(pair, provider, make_trader):
    # given: a resting bid, and a holder whose only lot has just expired
    buyer = make_trader(cny=100)
    second = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    Lot.objects.filter(holder=buyer.user).update(expires_at=timezone.now() - timedelta(seconds=1))
    bid = second.order(market=OUT, side="buy", price="7.00", quantity="0.5")
    assert bid["status"] == "open"

    # when: the holder sells into the bid
    ask = buyer.order(market=OUT, side="sell", price="7.00", quantity="0.5")

    # then: its order is cancelled at once (it never reached the book); the bid still rests
    assert (ask["status"], ask["cancel_reason"]) == ("cancelled", "undeliverable")
    assert Order.objects.get(id=bid["id"]).status == "open"
    assert not Lot.objects.filter(holder=second.user).exists()
    assert balance(buyer.user, OUT) == (1_000_000, 0)


def test_a_listing_past_its_end_does_not_sell_already_expired_capacity(pair, provider, make_trader):
    from orders.models import CapacityListing

    # given: the provider's output listing ended a moment ago; capacity_expire_due (beat) has
    # not cancelled its ask yet
    CapacityListing.objects.filter(provider=provider.user, market=pair.output_market).update(
        available_until=timezone.now() - timedelta(seconds=5)
    )
    buyer = make_trader(cny=100)
    escrow_before = escrow_balance()

    # when: a buyer's bid would take the ask
    bid = buyer.order(market=OUT, side="buy", price="8.00", quantity="1")

    # then: nothing was bought, nothing paid into escrow; the ask is cancelled
    assert bid["status"] == "open"
    assert not Lot.objects.filter(holder=buyer.user).exists()
    assert escrow_balance() == escrow_before
    ask = Order.objects.get(user=provider.user, market=pair.output_market, side="sell")
    assert (ask.status, ask.cancel_reason) == ("cancelled", "undeliverable")
    assert balance(buyer.user, "CNY")[0] + balance(buyer.user, "CNY")[1] == 100 * CNY
    assert_audit_ok()


def test_tokens_without_a_lot_of_a_seller_without_a_listing_do_not_sell(
    pair, provider, make_trader
):
    from exchange.ledger import services as ledger

    # given: a seller holding a live 1 MTok lot and 1 MTok more without a lot (a staff
    # correction), and no capacity listing of its own (#13 review finding 4)
    seller = make_trader(role="both", cny=100)
    assert seller.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == "filled"
    ledger.adjustment_post(
        user=seller.user, asset=OUT, amount=MTOK, reason="correction", staff_user=None,
        idempotency_key="test:without-a-lot",
    )  # fmt: skip
    buyer = make_trader(cny=100)
    ask = seller.order(market=OUT, side="sell", price="7.50", quantity="2")
    assert ask["status"] == "open"

    # when: a buyer would take all of it (below the provider's ask at 8.00)
    bid = buyer.order(market=OUT, side="buy", price="7.50", quantity="2")

    # then: the ask is cancelled as undeliverable, nothing bought; its lot can still be resold
    assert bid["status"] == "open"
    assert not Lot.objects.filter(holder=buyer.user).exists()
    cancelled = Order.objects.get(id=ask["id"])
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "undeliverable")
    resale = seller.order(market=OUT, side="sell", price="7.50", quantity="1")
    assert resale["status"] == "filled"
    [lot] = Lot.objects.filter(holder=buyer.user)
    assert (lot.provider_id, lot.bought_tokens) == (provider.user.id, MTOK)
    assert_audit_ok()


def test_a_stale_lot_window_is_rolled_back_and_all_lots_locked_at_once(
    pair, provider, make_trader, monkeypatch
):
    from exchange.delivery.escrow import lots as lots_module

    # given: a holder of two lots reselling 1.5 MTok; the window read finds its lots drawn on
    # meanwhile (as when a reservation commits between the statement's snapshot and its lock)
    holder, buyer = make_trader(cny=100), make_trader(cny=100)
    for _ in range(2):
        assert holder.order(market=OUT, side="buy", price="8.00", quantity="1")["status"] == (
            "filled"
        )
    statements: list[str] = []
    original = lots_module._lots_read

    def read(sql, params, stale=None):
        statements.append("window" if stale is not None else "all")
        found = original(sql, params, stale)
        if stale is not None:
            stale.update(found)
        return found

    monkeypatch.setattr(lots_module, "_lots_read", read)
    assert holder.order(market=OUT, side="sell", price="7.50", quantity="1.5")["status"] == "open"

    # when: a buyer takes it
    assert buyer.order(market=OUT, side="buy", price="7.50", quantity="1.5")["status"] == "filled"

    # then: the window was given up and every lot read again in one statement; the resale
    # moved 1.5 MTok of the holder's lots to the buyer
    assert statements == ["window", "all"]
    assert sum(lot.bought_tokens for lot in Lot.objects.filter(holder=buyer.user)) == 1_500_000
    assert balance(holder.user, OUT) == (500_000, 0)
    assert_audit_ok()
