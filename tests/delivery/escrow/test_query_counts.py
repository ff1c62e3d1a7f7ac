"""The gateway calls these once per request: their statements are pinned."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from exchange.delivery.escrow.services import (
    reservation_open,
    reservation_settle,
)
from tests.delivery.escrow.conftest import IN, OUT

pytestmark = pytest.mark.django_db(transaction=True)


def test_reservation_statements_are_few(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    buyer.order(market=OUT, side="buy", price="8.00", quantity="1")
    buyer.order(market=IN, side="buy", price="2.00", quantity="1")
    warm = reservation_open(user=buyer.user, pair=pair, provider_id=provider.user.id,
                            input_tokens=1, output_tokens=1, key="warm")  # fmt: skip
    reservation_settle(reservation_id=warm.id, input_tokens=1, output_tokens=1, sla_missed=False)

    with CaptureQueriesContext(connection) as opening:
        reservation = reservation_open(user=buyer.user, pair=pair, provider_id=provider.user.id,
                                       input_tokens=100, output_tokens=1_000, key="q")  # fmt: skip
    with CaptureQueriesContext(connection) as settling:
        reservation_settle(reservation_id=reservation.id, input_tokens=50, output_tokens=500,
                           sla_missed=False)  # fmt: skip
    # Django's statements (the ledger's and the lot updates' array statements go through their
    # own cursor and add a fixed few): open = key check, BEGIN, lock lots, reservation, parts,
    # ledger savepoint ×2, COMMIT; settle = BEGIN, lock reservation, parts, lock lots, ledger
    # savepoint ×2, COMMIT (the reservation update is one array statement for a group)
    assert (len(opening), len(settling)) == (8, 7)
