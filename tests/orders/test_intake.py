"""Group commit of concurrent single orders (``orders.intake``) and the shared reads of waiting
requests (``orders.waiting``)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection

from exchange.errors import InsufficientFunds, ValidationFailed
from exchange.ledger import selectors as ledger_selectors
from orders import intake, services, waiting
from orders.models import Order, OrderCommand
from orders.services import order_place, order_request_parse


def _wait_until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _run(target: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = target(*args)
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=body)
    thread.start()
    return thread, box


class _Placer:
    """A stand-in for ``_place_group`` whose first call blocks until released."""

    def __init__(self, fail_group: int | None = None) -> None:
        self.groups: list[list[str]] = []
        self.release = threading.Event()
        self.fail_group = fail_group

    def __call__(self, items: list[tuple[Any, Any]]) -> list[Any]:
        self.groups.append([request for _, request in items])
        if len(self.groups) == 1:
            assert self.release.wait(5)
        if self.fail_group == len(self.groups):
            raise RuntimeError("database gone")
        return [
            ValidationFailed(f"{request} refused") if request.startswith("bad") else (request, True)
            for _, request in items
        ]


def test_orders_arriving_while_a_group_commits_go_together_and_each_gets_its_own_answer() -> None:
    place = _Placer()
    first, first_box = _run(intake.group_place, "u0", "r0", place)
    _wait_until(lambda: len(place.groups) == 1)  # the leader is committing r0 alone
    later = [
        _run(intake.group_place, f"u{n}", request, place)
        for n, request in enumerate(["r1", "bad2", "r3", "r4"], start=1)
    ]
    _wait_until(lambda: len(intake._queue) == 4)
    place.release.set()
    for thread, _ in [(first, first_box), *later]:
        thread.join(5)
    assert place.groups == [["r0"], ["r1", "bad2", "r3", "r4"]]  # two commits for five orders
    assert first_box == {"value": ("r0", True)}
    answers = [box for _, box in later]
    assert answers[0] == {"value": ("r1", True)}
    assert isinstance(answers[1]["error"], ValidationFailed)  # only its own request is refused
    assert str(answers[1]["error"]) == "bad2 refused"
    assert answers[2] == {"value": ("r3", True)}
    assert answers[3] == {"value": ("r4", True)}
    assert intake._queue == []
    assert not intake._leading


def test_a_failing_group_fails_its_members_only_and_the_next_order_is_placed() -> None:
    place = _Placer(fail_group=2)
    first, first_box = _run(intake.group_place, "u0", "r0", place)
    _wait_until(lambda: len(place.groups) == 1)
    later = [_run(intake.group_place, "u", request, place) for request in ("r1", "r2")]
    _wait_until(lambda: len(intake._queue) == 2)
    place.release.set()
    for thread, _ in [(first, first_box), *later]:
        thread.join(5)
    assert first_box == {"value": ("r0", True)}
    for _, box in later:
        assert isinstance(box["error"], RuntimeError)
    assert not intake._leading
    assert intake.group_place("u", "r5", place) == ("r5", True)  # a new leader takes over


@pytest.mark.django_db(transaction=True)
def test_concurrent_orders_share_one_transaction_with_answers_as_if_alone(
    postgres, settings, market, make_user, fund, monkeypatch
) -> None:
    settings.ENGINE_RUNNER = "external"
    rich = [make_user() for _ in range(3)]
    for user in rich:
        fund(user, cny=100)
    broke = make_user()
    first = order_place(
        user=rich[0],
        request=order_request_parse(
            market=market, side="buy", price="8.00", quantity="1", client_order_id="again"
        ),
    )[0]
    real = services._place_group
    groups: list[int] = []
    release = threading.Event()

    def observed(items: list[Any]) -> list[Any]:
        groups.append(len(items))
        if len(groups) == 1:
            assert release.wait(5)
        return real(items)

    monkeypatch.setattr(services, "_place_group", observed)

    def buy(user: Any, client_order_id: str | None = None) -> Any:
        try:
            return order_place(
                user=user,
                request=order_request_parse(
                    market=market,
                    side="buy",
                    price="8.00",
                    quantity="1",
                    client_order_id=client_order_id,
                ),
            )
        finally:
            connection.close()

    leader, leader_box = _run(buy, rich[1])
    _wait_until(lambda: len(groups) == 1)
    others = [_run(buy, rich[2]), _run(buy, broke), _run(buy, rich[0], "again")]
    _wait_until(lambda: len(intake._queue) == 3)
    release.set()
    for thread, _ in [(leader, leader_box), *others]:
        thread.join(10)
    assert groups[:2] == [1, 3]
    placed, refused, replayed = (box for _, box in others)
    assert leader_box["value"][1] is True
    assert placed["value"][1] is True
    assert isinstance(refused["error"], InsufficientFunds)
    assert replayed["value"] == (first, False)  # the same order, not a second one
    assert Order.objects.count() == 3
    assert OrderCommand.objects.count() == 3
    assert not Order.objects.filter(user=broke).exists()
    for user in rich:
        held = ledger_selectors.balance_get(user=user, asset="CNY").held
        assert held == sum(o.hold_amount for o in Order.objects.filter(user=user))


class _BlockingRows:
    """``Order.objects.select_related(...).filter(...).order_by()`` whose first read blocks."""

    def __init__(self) -> None:
        self.reads: list[list[int]] = []
        self.release = threading.Event()
        self.objects = self

    def select_related(self, *fields: str) -> _BlockingRows:
        return self

    def filter(self, id__in: list[int]) -> _BlockingRows:
        self.reads.append(sorted(id__in))
        self.asked = sorted(id__in)
        return self

    def order_by(self) -> list[Any]:
        ids, number = self.asked, len(self.reads)
        if number == 1:
            assert self.release.wait(5)
        return [SimpleNamespace(id=i, read=number) for i in ids]


def test_waiting_requests_share_reads_but_never_take_one_begun_before_they_asked(
    monkeypatch,
) -> None:
    rows = _BlockingRows()
    monkeypatch.setattr(waiting, "Order", rows)
    waiting.want([1, 2, 3])
    try:
        first, first_box = _run(waiting.read, [1])
        _wait_until(lambda: len(rows.reads) == 1)  # the first read is under way
        second, second_box = _run(waiting.read, [2])
        third, third_box = _run(waiting.read, [3])
        time.sleep(0.05)
        assert len(rows.reads) == 1  # they wait for it to end, and do not read alongside
        rows.release.set()
        for thread in (first, second, third):
            thread.join(5)
        assert first_box["value"][1].read == 1
        # both asked during read 1, so neither may use it: one more read serves both
        assert second_box["value"][2].read == 2
        assert third_box["value"][3].read == 2
        assert rows.reads == [[1, 2, 3], [1, 2, 3]]
    finally:
        waiting.unwant([1, 2, 3])
    assert waiting._fresh == {}
    assert not waiting._wanted


@pytest.mark.django_db
def test_a_group_holds_its_orders_in_one_netted_ledger_transaction(market, make_user, fund) -> None:
    from exchange.ledger.models import LedgerTransaction

    user = make_user()
    fund(user, cny=100, tokens=5_000_000, market=market)
    before = LedgerTransaction.objects.filter(kind="hold").count()
    placed = services.order_place_many(
        user=user,
        requests=[
            order_request_parse(market=market, side="buy", price="7.00", quantity="1"),
            order_request_parse(market=market, side="buy", price="7.10", quantity="2"),
            order_request_parse(market=market, side="sell", price="9.00", quantity="1"),
        ],
    )
    orders = [outcome[0] for outcome in placed]
    holds = LedgerTransaction.objects.filter(kind="hold").order_by("id")
    assert holds.count() == before + 1
    hold = holds.last()
    ids = sorted(o.id for o in orders)
    assert hold.reference == "orders:" + ",".join(map(str, ids))
    assert hold.idempotency_key == f"orders:{ids[0]}:hold"
    cny = ledger_selectors.balance_get(user=user, asset="CNY")
    tokens = ledger_selectors.balance_get(user=user, asset=market.symbol)
    assert cny.held == sum(o.hold_amount for o in orders if o.side == "buy")
    assert tokens.held == sum(o.hold_amount for o in orders if o.side == "sell")


@pytest.mark.django_db
def test_an_order_that_fails_midway_costs_the_others_nothing(
    market, make_user, fund, monkeypatch
) -> None:
    from django.db import OperationalError

    rich, poor = make_user(), make_user()
    fund(rich, cny=100)
    requests = [
        (rich, order_request_parse(market=market, side="buy", price="7.00", quantity="1")),
        (poor, order_request_parse(market=market, side="buy", price="7.00", quantity="1")),
        (rich, order_request_parse(market=market, side="buy", price="7.20", quantity="1")),
    ]
    real = services._order_place_one

    def flaky(*, user: Any, request: Any, **kwargs: Any) -> Any:
        if request.price_ticks == 720:
            raise OperationalError("connection lost")
        return real(user=user, request=request, **kwargs)

    # the poor user's refusal sends the group to one transaction per order; the third fails
    monkeypatch.setattr(services, "_order_place_one", flaky)
    first, second, third = services._place_group(requests)
    assert first[1] is True
    assert Order.objects.filter(id=first[0].id).exists()
    assert isinstance(second, InsufficientFunds)
    assert isinstance(third, OperationalError)
    assert Order.objects.filter(user=rich).count() == 1


def test_a_failed_shared_read_is_not_taken_as_an_answer(monkeypatch) -> None:
    class FailingFirst(_BlockingRows):
        def order_by(self) -> list[Any]:
            if len(self.reads) == 1:
                assert self.release.wait(5)
                raise RuntimeError("connection lost")
            return super().order_by()

    rows = FailingFirst()
    monkeypatch.setattr(waiting, "Order", rows)
    waiting.want([1, 2])
    try:
        first, first_box = _run(waiting.read, [1])
        _wait_until(lambda: len(rows.reads) == 1)
        second, second_box = _run(waiting.read, [2])
        time.sleep(0.05)
        rows.release.set()
        for thread in (first, second):
            thread.join(5)
        assert isinstance(first_box["error"], RuntimeError)  # the reader hears its failure
        assert second_box["value"][2].read == 2  # the other read again, itself
        assert len(rows.reads) == 2
    finally:
        waiting.unwant([1, 2])
