"""Group commit of reservations: concurrent calls form groups, and each member of a group is
answered as if it had been alone (a refused member changes nothing and fails nobody else)."""

from __future__ import annotations

import threading

import pytest

from exchange.delivery.escrow import services
from exchange.delivery.escrow.grouping import GroupCommit
from exchange.delivery.escrow.models import Lot, Reservation, ReservationStatus
from exchange.delivery.escrow.services import (
    InsufficientAllocation,
    OpenRequest,
    ReservationClosed,
    SettleRequest,
    reservation_open,
    reservation_release,
)
from exchange.errors import Conflict, NotFound, ValidationFailed
from tests.delivery.escrow.conftest import IN, OUT, assert_audit_ok, balance

pytestmark = pytest.mark.django_db(transaction=True)


def test_calls_queued_while_a_group_runs_form_the_next_group():
    started, release = threading.Event(), threading.Event()
    groups: list[list[int]] = []

    def process(items: list[int]) -> list[object]:
        groups.append(list(items))
        if len(groups) == 1:
            started.set()
            release.wait(5)
        return [ValueError(item) if item == 3 else item * 10 for item in items]

    grouped: GroupCommit[int, int] = GroupCommit(process, limit=100)
    answers: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            answers[item] = grouped.run(item)
        except ValueError as error:
            answers[item] = error

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert started.wait(5)
    others = [threading.Thread(target=call, args=(n,)) for n in (1, 2, 3, 4)]
    for thread in others:
        thread.start()
    while len(grouped._queue) < 4:  # all four queued behind the running group
        threading.Event().wait(0.01)
    release.set()
    for thread in [first, *others]:
        thread.join(5)

    # (in whatever order the four threads reached the queue)
    assert [groups[0], sorted(groups[1]), len(groups)] == [[0], [1, 2, 3, 4], 2]
    assert {n: answers[n] for n in (0, 1, 2, 4)} == {0: 0, 1: 10, 2: 20, 4: 40}
    assert isinstance(answers[3], ValueError)  # only its own caller sees its error


def test_a_group_of_opens_answers_each_request_as_if_alone(pair, provider, make_trader):
    rich, poor, other = make_trader(cny=100), make_trader(cny=100), make_trader(cny=100)
    for buyer in (rich, poor):
        assert buyer.order(market=OUT, side="buy", price="8.00", quantity="0.01")["status"] == (
            "filled"
        )
        assert buyer.order(market=IN, side="buy", price="2.00", quantity="0.01")["status"] == (
            "filled"
        )
    owned = reservation_open(user=rich.user, pair=pair, provider_id=provider.user.id,
                             input_tokens=10, output_tokens=10, key="owned")  # fmt: skip

    def request(buyer, tokens: int, key: str) -> OpenRequest:
        return OpenRequest(buyer.user, pair, provider.user.id, tokens, tokens, key)

    outcomes = services._opens_process(
        [
            request(rich, 4_000, "a"),
            request(poor, 20_000, "b"),  # holds 10,000 of each: refused
            request(rich, 5_000, "c"),
            request(other, 1, "owned"),  # another user's key
            request(rich, 0, "d"),  # nothing asked
            request(rich, 10, "owned"),  # a replay: the first reservation
            request(rich, 2_000, "e"),  # 10 + 4,000 + 5,000 already taken of 10,000
        ]
    )

    a, b, c, conflict, invalid, replay, e = outcomes
    assert isinstance(a, Reservation)
    assert isinstance(c, Reservation)
    assert isinstance(b, InsufficientAllocation)
    assert b.details["held"] == {"input_tokens": 10_000, "output_tokens": 10_000}
    assert isinstance(conflict, Conflict)
    assert isinstance(invalid, ValidationFailed)
    assert isinstance(replay, Reservation)
    assert replay.id == owned.id
    assert isinstance(e, InsufficientAllocation)
    assert e.details["held"] == {"input_tokens": 990, "output_tokens": 990}
    assert balance(rich.user, IN) == (10_000 - 9_010, 9_010)
    assert balance(poor.user, OUT) == (10_000, 0)  # the refused one changed nothing
    assert sorted(Reservation.objects.values_list("key", flat=True)) == ["a", "c", "owned"]
    assert sum(Lot.objects.filter(holder=rich.user).values_list("reserved_tokens", flat=True)) == (
        2 * 9_010
    )
    assert_audit_ok()


def test_a_group_of_settles_answers_each_request_as_if_alone(pair, provider, make_trader):
    buyer = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="0.01")["status"] == "filled"
    assert buyer.order(market=IN, side="buy", price="2.00", quantity="0.01")["status"] == "filled"

    def open_(key: str) -> Reservation:
        return reservation_open(user=buyer.user, pair=pair, provider_id=provider.user.id,
                                input_tokens=1_000, output_tokens=2_000, key=key)  # fmt: skip

    first, second, released = open_("1"), open_("2"), open_("3")
    reservation_release(reservation_id=released.id)
    outcomes = services._settles_process(
        [
            SettleRequest(first.id, 500, 1_500, False),
            SettleRequest(released.id, 1, 1, False),
            SettleRequest(second.id, 2_000, 3_000, True),  # beyond the reservation: clipped
            SettleRequest(10**12, 1, 1, False),
            SettleRequest(first.id, 1, 1, False),  # the same one twice: the first settlement
        ]
    )
    one, closed, two, unknown, again = outcomes
    assert (one.input_tokens, one.output_tokens, one.credit_units) == (500, 1_500, 0)
    assert isinstance(closed, ReservationClosed)
    assert isinstance(unknown, NotFound)
    assert (two.input_tokens, two.output_tokens) == (1_000, 2_000)
    assert (two.clipped_input_tokens, two.clipped_output_tokens) == (1_000, 1_000)
    assert two.sla_missed
    assert two.credit_units > 0
    assert again == one
    statuses = dict(Reservation.objects.values_list("id", "status"))
    assert statuses == {
        first.id: ReservationStatus.SETTLED,
        second.id: ReservationStatus.SETTLED,
        released.id: ReservationStatus.RELEASED,
    }
    assert balance(buyer.user, IN) == (10_000 - 1_500, 0)
    assert balance(buyer.user, OUT) == (10_000 - 3_500, 0)
    assert_audit_ok()


def test_a_callers_batch_is_one_group_with_an_outcome_each():
    """run_many: a caller's whole batch (the gateway's hop) is processed together, with what
    others queued; each item's outcome comes back, an error as an instance (not raised)."""
    groups: list[list[int]] = []

    def process(items: list[int]) -> list[object]:
        groups.append(list(items))
        return [ValueError(item) if item == 3 else item * 10 for item in items]

    grouped: GroupCommit[int, int] = GroupCommit(process, limit=3)
    outcomes = grouped.run_many([1, 2, 3, 4])

    assert groups == [[1, 2, 3], [4]]  # the limit splits it; the caller leads both
    assert outcomes[:2] == [10, 20]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3] == 40
    assert grouped.run_many([]) == []


def test_holdings_of_a_batch_in_one_query_match_each_alone(pair, provider, make_trader):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rich, poor, empty = make_trader(cny=100), make_trader(cny=100), make_trader(cny=100)
    assert rich.order(market=OUT, side="buy", price="8.00", quantity="0.01")["status"] == "filled"
    assert rich.order(market=IN, side="buy", price="2.00", quantity="0.01")["status"] == "filled"
    assert poor.order(market=OUT, side="buy", price="8.00", quantity="0.01")["status"] == "filled"
    reservation_open(user=rich.user, pair=pair, provider_id=provider.user.id,
                     input_tokens=100, output_tokens=300, key="held")  # fmt: skip
    askers = [(rich.user, pair), (poor.user, pair), (empty.user, pair), (rich.user, pair)]

    with CaptureQueriesContext(connection) as queries:
        together = services.holdings_get_many(askers=askers)

    assert len(queries) == 1
    assert together == [services.holdings_get(user=user, pair=p) for user, p in askers]
    (rich_holding,) = together[0]
    assert (rich_holding.input_tokens, rich_holding.output_tokens) == (9_900, 9_700)
    (poor_holding,) = together[1]
    assert (poor_holding.input_tokens, poor_holding.output_tokens) == (0, 10_000)
    assert together[2] == []
