"""The database wall for lots: writes sent as raw SQL, past the services, are refused by
PostgreSQL, and what the constraints cannot see the ledger audit reports."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from exchange.delivery.escrow.models import Lot
from exchange.ledger.selectors import audit_run
from tests.delivery.escrow.conftest import assert_audit_ok, lot_state

pytestmark = pytest.mark.django_db(transaction=True)

REFUSED_UPDATES = {
    "overdrawn by a reservation": "reserved_tokens = bought_tokens + 1",
    "overdrawn by deliveries": "delivered_tokens = bought_tokens + 1, earned_units = escrow_units",
    "tokens out without their money": "delivered_tokens = 10",
    "money out without its tokens": "earned_units = 1",
    "more released than earned": "released_units = 1",
    "negative counter": "moved_tokens = -1",
    "escrow overpaid": "credited_units = escrow_units + 1",
    "closed while tokens remain": "closed_at = now()",
    "closed with escrow unpaid": (
        "unconsumed_tokens = bought_tokens, earned_units = escrow_units, closed_at = now()"
    ),
}


@pytest.fixture
def lot(pair, provider, make_trader) -> Lot:
    buyer = make_trader(cny=100)
    order = buyer.order(market=pair.output_market.symbol, side="buy", price="8.00", quantity="1")
    assert order["status"] == "filled"
    return Lot.objects.get(holder=buyer.user)


@pytest.mark.parametrize("change", REFUSED_UPDATES.values(), ids=REFUSED_UPDATES.keys())
def test_database_refuses_a_broken_lot(lot, change):
    before = lot_state(lot)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE delivery_escrow_lot SET {change} WHERE id = %s", [lot.id])  # noqa: S608
    assert lot_state(lot) == before
    assert_audit_ok()


def test_a_consistent_lot_update_is_accepted(lot):
    # delivering half: the money rule floor(escrow × drawn / bought) holds
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE delivery_escrow_lot SET delivered_tokens = bought_tokens / 2, "
            "earned_units = escrow_units / 2 WHERE id = %s",
            [lot.id],
        )
    assert lot_state(lot)["delivered_tokens"] == 500_000


def test_audit_reports_escrow_the_lots_do_not_explain(lot):
    with connection.cursor() as cursor:  # a lot whose escrow never reached the ledger
        cursor.execute(
            "INSERT INTO delivery_escrow_lot (holder_id, market_id, provider_id, trade_id, "
            "price_ticks, seller_fee_rate, expires_at, bought_tokens, escrow_units, "
            "reserved_tokens, delivered_tokens, credited_tokens, unconsumed_tokens, "
            "moved_tokens, earned_units, released_units, fee_units, credited_units, "
            "moved_units, created_at) SELECT holder_id, market_id, provider_id, trade_id, "
            "price_ticks, seller_fee_rate, expires_at, 10, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "
            "created_at FROM delivery_escrow_lot WHERE id = %s",
            [lot.id],
        )
    report = audit_run()
    assert not report.is_ok
    assert report.problems == [
        f"escrow account differs from its lots' outstanding escrow: CNY, "
        f"{lot.escrow_units}, {lot.escrow_units + 7}",
        # its 10 tokens were never credited to the holder either
        f"holder's open lots promise more tokens than its balance: {lot.holder_id}, "
        f"{lot.market.symbol}, 1000010, 1000000",
    ]


def test_audit_reports_lots_promising_more_tokens_than_the_holder_holds(lot):
    with connection.cursor() as cursor:  # tokens that left the balance without the lot
        cursor.execute(
            "UPDATE delivery_escrow_lot SET bought_tokens = bought_tokens * 2 WHERE id = %s",
            [lot.id],
        )
    report = audit_run()
    assert report.problems == [
        f"holder's open lots promise more tokens than its balance: {lot.holder_id}, "
        f"{lot.market.symbol}, 2000000, 1000000"
    ]


def test_audit_reports_reserved_tokens_without_a_reservation(lot):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE delivery_escrow_lot SET reserved_tokens = 5 WHERE id = %s", [lot.id])
    report = audit_run()
    assert report.problems == [
        f"lot's reserved tokens differ from its open reservations: {lot.id}, 5, 0"
    ]
