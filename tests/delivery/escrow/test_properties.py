"""A property test over random sequences of reserve / settle / release / resale / escrow
release, ending with expiry: after every step each lot keeps its identity and escrow ≥ 0, the
buyer's token balance is exactly its lots' remaining tokens (held = what open reservations
hold), and the ledger audit holds; at the end every lot is closed and each escrowed unit went
exactly once to the provider (less the fee) or back to the buyer.
``ESCROW_HYPOTHESIS_EXAMPLES`` raises the number of sequences (20 by default)."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import pytest
from django.db.models import Q, Sum
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.delivery.escrow.models import Lot, Reservation, ReservationStatus
from exchange.delivery.escrow.services import (
    InsufficientAllocation,
    escrow_release_due,
    lots_expire_due,
    reservation_open,
    reservation_release,
    reservation_settle,
)
from exchange.ledger.services import fee_for
from tests.delivery.escrow.conftest import IN, OUT, assert_audit_ok, balance

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("ESCROW_HYPOTHESIS_EXAMPLES", "20"))

tokens = st.integers(0, 30_000)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), tokens, tokens),
        st.tuples(st.just("settle"), st.integers(0, 9), tokens, tokens, st.booleans()),
        st.tuples(st.just("release"), st.integers(0, 9)),
        st.tuples(st.just("resell"), st.sampled_from([OUT, IN]), st.integers(1, 4)),
        st.tuples(st.just("pay")),
    ),
    max_size=14,
)


def _check(holders, pair) -> None:
    for lot in Lot.objects.filter(holder__in=holders):
        drawn = (
            lot.delivered_tokens + lot.credited_tokens + lot.unconsumed_tokens + lot.moved_tokens
        )
        assert drawn + lot.reserved_tokens <= lot.bought_tokens
        assert lot.outstanding_units >= 0
        assert lot.earned_units + lot.credited_units + lot.moved_units == (
            lot.escrow_units * drawn // lot.bought_tokens
        )
    for holder in holders:
        for market in pair.markets:
            lots = Lot.objects.filter(holder=holder, market=market)
            remaining = sum(lot.remaining_tokens for lot in lots)
            reserved = sum(lot.reserved_tokens for lot in lots)
            available, held = balance(holder, market.symbol)
            assert (available + held, held) == (remaining, reserved)
    assert_audit_ok()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(steps=operations)
def test_random_escrow_sequences_keep_every_lot_exact(pair, provider, make_trader, steps):
    buyer, other = make_trader(cny=100), make_trader(cny=100)
    holders = [buyer.user, other.user]
    for symbol, price in ((OUT, "8.00"), (IN, "2.00")):
        assert buyer.order(market=symbol, side="buy", price=price, quantity="0.05")["status"] == (
            "filled"
        )
    provider_cny = balance(provider.user, "CNY")[0]
    buyer_cny = balance(buyer.user, "CNY")[0]
    escrowed = sum(lot.escrow_units for lot in Lot.objects.filter(holder=buyer.user))
    opened: list[Reservation] = []
    credits = 0
    for number, step in enumerate(steps):
        kind = step[0]
        if kind == "reserve":
            with contextlib.suppress(InsufficientAllocation):  # refusals change nothing
                opened.append(
                    reservation_open(
                        user=buyer.user, pair=pair, provider_id=provider.user.id,
                        input_tokens=step[1], output_tokens=step[2] or 1,
                        key=f"p-{buyer.user.id}-{number}",
                    )
                )  # fmt: skip
        elif kind in ("settle", "release") and opened:
            reservation = opened[step[1] % len(opened)]
            if kind == "settle":
                status = Reservation.objects.get(id=reservation.id).status
                if status == ReservationStatus.RELEASED:
                    continue
                settled = reservation_settle(
                    reservation_id=reservation.id, input_tokens=step[2], output_tokens=step[3],
                    sla_missed=step[4],
                )  # fmt: skip
                if status == ReservationStatus.OPEN:
                    credits += settled.credit_units
            else:
                reservation_release(reservation_id=reservation.id)
        elif kind == "resell":
            quantity = f"0.0{step[2]}"
            sold = buyer.client.post(
                "/api/v1/orders",
                {"market": step[1], "side": "sell", "type": "limit", "price": "1.00",
                 "quantity": quantity},
                format="json",
            )  # fmt: skip
            if sold.status_code in (200, 201):
                assert sold.json()["status"] == "open"
                bought = other.order(market=step[1], side="buy", price="1.00", quantity=quantity)
                assert bought["status"] == "filled"
                buyer_cny = balance(buyer.user, "CNY")[0] - credits
        elif kind == "pay":
            escrow_release_due()
        _check(holders, pair)

    # expiry, with some reservations still running: their lots wait, then close
    later = timezone.now() + timedelta(days=3)
    lots_expire_due(now=later)
    _check(holders, pair)
    for reservation in opened:
        reservation_release(reservation_id=reservation.id)
    lots_expire_due(now=later)
    _check(holders, pair)
    lots = Lot.objects.filter(Q(holder=buyer.user) | Q(holder=other.user))
    assert all(lot.closed_at is not None for lot in lots)
    totals = lots.aggregate(released=Sum("released_units"), credited=Sum("credited_units"))
    assert totals["released"] + credits == escrowed  # every unit exactly once
    assert totals["credited"] == credits
    fees = sum(fee_for(notional=lot.released_units, rate=lot.seller_fee_rate) for lot in lots)
    assert balance(provider.user, "CNY")[0] == provider_cny + totals["released"] - fees
    assert balance(buyer.user, "CNY")[0] == buyer_cny + credits
