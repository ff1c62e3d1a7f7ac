"""Gateway reservations on lots: refusals with the numbers, earliest expiry first, clipping,
idempotency, the reaper, and 200 concurrent reservations against an allocation covering 50."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from exchange.delivery.escrow.models import Lot, Reservation, ReservationPart, ReservationStatus
from exchange.delivery.escrow.services import (
    InsufficientAllocation,
    ReservationClosed,
    escrow_release_due,
    holdings_get,
    reservation_open,
    reservation_release,
    reservation_settle,
    reservations_reap,
)
from exchange.ledger.models import LedgerTransaction, TransactionKind
from orders.capacity import capacity_list
from tests.delivery.endpoints.helpers import live_endpoint
from tests.delivery.escrow.conftest import (
    IN,
    MTOK,
    OUT,
    assert_audit_ok,
    balance,
    escrow_balance,
    lot_state,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _buy(buyer, out: str = "1", inp: str = "1") -> None:
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity=out)["status"] == "filled"
    assert buyer.order(market=IN, side="buy", price="2.00", quantity=inp)["status"] == "filled"


def _open(buyer, pair, provider, input_tokens: int, output_tokens: int, key: str) -> Reservation:
    return reservation_open(
        user=buyer.user,
        pair=pair,
        provider_id=provider.user.id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        key=key,
    )


def _world(buyer) -> dict:
    return {
        "balances": [balance(buyer.user, asset) for asset in (IN, OUT, "CNY")],
        "lots": [lot_state(lot) for lot in Lot.objects.order_by("id")],
        "reservations": Reservation.objects.count(),
        "parts": ReservationPart.objects.count(),
        "transactions": LedgerTransaction.objects.count(),
    }


def test_reservation_beyond_the_allocation_is_refused_with_the_numbers(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    _buy(buyer, out="0.01", inp="0.01")  # 10,000 tokens each
    before = _world(buyer)

    with pytest.raises(InsufficientAllocation) as refused:
        _open(buyer, pair, provider, input_tokens=500, output_tokens=10_001, key="too-much")

    assert refused.value.http_status == 402
    assert refused.value.code == "insufficient_allocation"
    assert refused.value.details["needed"] == {"input_tokens": 500, "output_tokens": 10_001}
    assert refused.value.details["held"] == {"input_tokens": 10_000, "output_tokens": 10_000}
    assert _world(buyer) == before


def test_tokens_held_by_a_sell_order_are_not_reservable(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    _buy(buyer, out="0.02", inp="0.01")
    # the buyer offers 0.015 MTok of its output back on the market (resting: above the asks)
    assert buyer.order(market=OUT, side="sell", price="9.00", quantity="0.015")["status"] == (
        "open"
    )
    before = _world(buyer)
    with pytest.raises(InsufficientAllocation) as refused:
        _open(buyer, pair, provider, input_tokens=100, output_tokens=6_000, key="held-by-ask")
    assert refused.value.details["held"] == {"input_tokens": 10_000, "output_tokens": 5_000}
    assert _world(buyer) == before
    [holding] = holdings_get(user=buyer.user, pair=pair)
    assert (holding.input_tokens, holding.output_tokens) == (10_000, 5_000)


def test_reservation_draws_the_earliest_expiring_lot_first(pair, make_trader):
    provider = make_trader(role="provider")
    for market in pair.markets:
        live_endpoint(provider.user, market)
    now = timezone.now()
    late, early = now + timedelta(days=2), now + timedelta(days=1)
    # the later listing asks first (time priority), so the buyer's first lot expires last
    for until in (late, early):
        capacity_list(user=provider.user, market=pair.output_market, quantity="1",
                      available_until=until, ask_price="8.00")  # fmt: skip
    capacity_list(user=provider.user, market=pair.input_market, quantity="1",
                  available_until=late, ask_price="2.00")  # fmt: skip
    buyer = make_trader(cny=100)
    _buy(buyer, out="2", inp="0.5")
    lots = {lot.expires_at: lot for lot in Lot.objects.filter(market=pair.output_market)}
    assert set(lots) == {late, early}

    reservation = _open(buyer, pair, provider, 1_000, 1_500_000, key="fifo")

    parts = {part.lot_id: part.tokens for part in reservation.parts.all()}
    lot_in = Lot.objects.get(market=pair.input_market)
    assert parts == {lots[early].id: MTOK, lots[late].id: 500_000, lot_in.id: 1_000}
    [holding] = holdings_get(user=buyer.user, pair=pair)
    assert (holding.earliest_expiry, holding.output_tokens) == (late, 500_000)  # early: all held
    assert holding.output_price == Decimal("8.00")

    settled = reservation_settle(
        reservation_id=reservation.id, input_tokens=10, output_tokens=1_200_000, sla_missed=False
    )
    assert settled.lot_ids == (lot_in.id, lots[early].id, lots[late].id)
    assert lot_state(lots[early])["delivered_tokens"] == MTOK
    assert lot_state(lots[late])["delivered_tokens"] == 200_000
    assert (settled.output_cost_units, settled.input_cost_units) == (960_000_000, 2_000)
    assert_audit_ok()


def test_settlement_clips_usage_beyond_the_reservation_and_is_idempotent(
    pair, provider, make_trader
):
    buyer = make_trader(cny=100)
    _buy(buyer)
    reservation = _open(buyer, pair, provider, 100, 1_000, key="clip")

    first = reservation_settle(
        reservation_id=reservation.id, input_tokens=150, output_tokens=1_250, sla_missed=False
    )
    assert (first.input_tokens, first.output_tokens) == (100, 1_000)
    assert (first.clipped_input_tokens, first.clipped_output_tokens) == (50, 250)
    after = _world(buyer)

    again = reservation_settle(
        reservation_id=reservation.id, input_tokens=150, output_tokens=1_250, sla_missed=True
    )
    reservation_release(reservation_id=reservation.id)  # a settlement is never undone

    assert (again.input_cost_units, again.output_cost_units, again.credit_units) == (
        first.input_cost_units, first.output_cost_units, 0
    )  # fmt: skip
    assert _world(buyer) == after
    assert balance(buyer.user, OUT) == (MTOK - 1_000, 0)
    assert_audit_ok()


def test_same_key_returns_the_first_reservation(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    _buy(buyer)
    first = _open(buyer, pair, provider, 100, 1_000, key="gen-same")
    second = _open(buyer, pair, provider, 100, 1_000, key="gen-same")
    assert first.id == second.id
    assert balance(buyer.user, OUT) == (MTOK - 1_000, 1_000)


def test_release_gives_everything_back_and_settling_it_later_is_refused(
    pair, provider, make_trader
):
    buyer = make_trader(cny=100)
    _buy(buyer)
    before = [balance(buyer.user, asset) for asset in (IN, OUT, "CNY")]
    lots_before = [lot_state(lot) for lot in Lot.objects.order_by("id")]
    reservation = _open(buyer, pair, provider, 300, 4_096, key="fails")

    reservation_release(reservation_id=reservation.id)
    reservation_release(reservation_id=reservation.id)  # idempotent

    assert [balance(buyer.user, asset) for asset in (IN, OUT, "CNY")] == before
    assert [lot_state(lot) for lot in Lot.objects.order_by("id")] == lots_before
    with pytest.raises(ReservationClosed):
        reservation_settle(
            reservation_id=reservation.id, input_tokens=300, output_tokens=10, sla_missed=False
        )
    assert escrow_release_due() == 0  # nothing was delivered: nothing owed
    assert_audit_ok()


def test_credit_rate_below_one_splits_the_cost_between_buyer_and_provider(
    pair, provider, make_trader
):
    pair.output_market.sla_credit_rate = Decimal("0.5")
    pair.output_market.save()
    buyer = make_trader(cny=100)
    _buy(buyer)
    cny_before = balance(buyer.user, "CNY")[0]
    reservation = _open(buyer, pair, provider, 100, 1_001, key="half")
    settled = reservation_settle(
        reservation_id=reservation.id, input_tokens=100, output_tokens=1_001, sla_missed=True
    )
    # 1,001 output tokens at 8 CNY/MTok = 800,800 units: half back; input credited in full
    assert (settled.output_cost_units, settled.input_cost_units) == (800_800, 20_000)
    assert settled.credit_units == 400_400 + 20_000
    assert balance(buyer.user, "CNY")[0] == cny_before + 420_400
    out_lot = Lot.objects.get(market=pair.output_market)
    assert (lot_state(out_lot)["credited_tokens"], lot_state(out_lot)["earned_units"]) == (
        1_001, 400_400
    )  # fmt: skip
    assert escrow_balance() == 10 * CNY_UNITS - 420_400
    assert_audit_ok()


CNY_UNITS = 10**8


def test_expired_lots_are_neither_held_nor_reservable(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    _buy(buyer)
    Lot.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert holdings_get(user=buyer.user, pair=pair) == []
    with pytest.raises(InsufficientAllocation) as refused:
        _open(buyer, pair, provider, 1, 1, key="late")
    assert refused.value.details["held"] == {"input_tokens": 0, "output_tokens": 0}


def test_reaper_releases_old_open_reservations_exactly_once(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    _buy(buyer)
    before = [balance(buyer.user, asset) for asset in (IN, OUT)]
    stale = [_open(buyer, pair, provider, 10, 100, key=f"dead-{i}") for i in range(6)]
    _open(buyer, pair, provider, 10, 100, key="alive")
    settled = _open(buyer, pair, provider, 10, 100, key="done")
    reservation_settle(reservation_id=settled.id, input_tokens=5, output_tokens=50,
                       sla_missed=False)  # fmt: skip
    Reservation.objects.exclude(key="alive").update(
        created_at=timezone.now() - timedelta(minutes=20)
    )
    released: list[int] = []

    def reap() -> None:
        try:
            released.append(reservations_reap(older_than=timedelta(minutes=15)))
        finally:
            connection.close()

    reapers = [threading.Thread(target=reap) for _ in range(3)]  # overlapping runs
    for thread in reapers:
        thread.start()
    for thread in reapers:
        thread.join()

    assert sum(released) == 6
    assert reservations_reap(older_than=timedelta(minutes=15)) == 0
    assert {r.status for r in Reservation.objects.filter(key__startswith="dead-")} == {
        ReservationStatus.RELEASED
    }
    assert Reservation.objects.get(key="alive").status == ReservationStatus.OPEN
    assert Reservation.objects.get(key="done").status == ReservationStatus.SETTLED
    releases = LedgerTransaction.objects.filter(
        kind=TransactionKind.RELEASE, reference__in=[f"reservation:{r.id}" for r in stale]
    )
    assert releases.count() == 6  # one each: never twice
    # what is still out: the fresh reservation (held) and the settled one's usage (gone)
    assert balance(buyer.user, IN) == (before[0][0] - 10 - 5, 10)
    assert balance(buyer.user, OUT) == (before[1][0] - 100 - 50, 100)
    assert sum(lot.reserved_tokens for lot in Lot.objects.all()) == 110
    assert_audit_ok()


def test_200_concurrent_reservations_against_an_allocation_for_50(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    _buy(buyer, out="0.05", inp="0.05")  # 50,000 tokens each: 50 requests of 1,000 + 1,000
    threads_count, connections = 200, threading.BoundedSemaphore(30)
    barrier = threading.Barrier(threads_count)
    outcomes: list[object] = [None] * threads_count

    def request(number: int) -> None:
        barrier.wait()
        # 200 threads at once, but at most 30 database connections (the server allows 100,
        # shared with other test runs)
        with connections:
            try:
                outcomes[number] = _open(buyer, pair, provider, 1_000, 1_000, key=f"c-{number}")
            except InsufficientAllocation as refused:
                outcomes[number] = refused
            except BaseException as error:
                outcomes[number] = error
            finally:
                connection.close()

    threads = [threading.Thread(target=request, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    won = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, InsufficientAllocation)]
    assert (len(won), len(refused)) == (50, 150), [type(o) for o in outcomes]
    assert balance(buyer.user, IN) == (0, 50_000)
    assert balance(buyer.user, OUT) == (0, 50_000)
    assert [lot.reserved_tokens for lot in Lot.objects.order_by("id")] == [50_000, 50_000]
    assert_audit_ok()

    # and they all settle, concurrently, drawing exactly what was used
    def settle(reservation: Reservation) -> None:
        with connections:
            try:
                reservation_settle(reservation_id=reservation.id, input_tokens=900,
                                   output_tokens=700, sla_missed=False)  # fmt: skip
            finally:
                connection.close()

    settlers = [threading.Thread(target=settle, args=(r,)) for r in won]
    for thread in settlers:
        thread.start()
    for thread in settlers:
        thread.join()
    assert balance(buyer.user, IN) == (50 * 100, 0)
    assert balance(buyer.user, OUT) == (50 * 300, 0)
    drawn = {lot.market_id: lot_state(lot) for lot in Lot.objects.all()}
    assert (drawn[pair.input_market.id]["delivered_tokens"], drawn[pair.output_market.id][
        "delivered_tokens"
    ]) == (45_000, 35_000)  # fmt: skip
    assert {state["reserved_tokens"] for state in drawn.values()} == {0}
    assert_audit_ok()
