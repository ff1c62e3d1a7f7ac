"""The engine runner (a thread, as in production) resells a holder's lots while the same holder's
gateway requests reserve and settle on them: no deadlock, no lot drawn twice, the audit holds."""

from __future__ import annotations

import random
import threading
import time

import pytest
from django.db import connection
from django.db.models import Sum

from exchange.delivery.escrow.models import Lot
from exchange.delivery.escrow.services import (
    InsufficientAllocation,
    reservation_open,
    reservation_settle,
)
from exchange.errors import ExchangeError
from exchange.runner.loop import RunnerLoop
from orders.models import OPEN_STATUSES, Order, OrderCommand
from orders.services import order_place, order_request_parse
from tests.delivery.escrow.conftest import OUT, assert_audit_ok, balance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


def test_resales_and_reservations_on_the_same_lots_at_once(settings, pair, provider, make_trader):
    buyer, other = make_trader(cny=1000), make_trader(cny=1000)
    for symbol, price in ((OUT, "8.00"), (pair.input_market.symbol, "2.00")):
        assert buyer.order(market=symbol, side="buy", price=price, quantity="0.2")["status"] == (
            "filled"
        )
    settings.ENGINE_RUNNER = "external"
    loop = RunnerLoop([OUT], idle_sleep=0.002)
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    failures: list[BaseException] = []
    served = refused = 0
    lock = threading.Lock()

    def gateway(number: int) -> None:
        nonlocal served, refused
        rng = random.Random(number)
        try:
            for step in range(12):
                try:
                    reservation = reservation_open(
                        user=buyer.user, pair=pair, provider_id=provider.user.id,
                        input_tokens=500, output_tokens=rng.randint(1_000, 9_000),
                        key=f"g-{number}-{step}",
                    )  # fmt: skip
                except InsufficientAllocation:
                    with lock:
                        refused += 1
                    continue
                reservation_settle(
                    reservation_id=reservation.id, input_tokens=rng.randint(0, 500),
                    output_tokens=rng.randint(0, 1_000), sla_missed=rng.random() < 0.3,
                )  # fmt: skip
                with lock:
                    served += 1
        except BaseException as error:
            failures.append(error)
        finally:
            connection.close()

    def reseller(number: int) -> None:
        rng = random.Random(100 + number)
        try:
            for _ in range(10):
                quantity = f"0.0{rng.randint(1, 3)}"
                try:  # refused when reservations hold the tokens: fine
                    order_place(
                        user=buyer.user,
                        request=order_request_parse(
                            market=pair.output_market, side="sell", type="limit", price="7.00",
                            quantity=quantity,
                        ),
                    )  # fmt: skip
                except ExchangeError:
                    continue
                order_place(
                    user=other.user,
                    request=order_request_parse(
                        market=pair.output_market, side="buy", type="limit", price="7.00",
                        quantity=quantity, time_in_force="IOC",
                    ),
                )  # fmt: skip
        except BaseException as error:
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=gateway, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=reseller, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 30
    while OrderCommand.objects.filter(seq__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.stop.set()
    runner.join(timeout=10)

    assert failures == []
    assert served > 0
    children = Lot.objects.filter(holder=other.user)
    assert children.exists()  # resales happened, and moved lots
    assert set(children.values_list("provider_id", flat=True)) == {provider.user.id}
    for user in (buyer.user, other.user):
        lots = Lot.objects.filter(holder=user, market=pair.output_market)
        remaining = sum(lot.remaining_tokens for lot in lots)
        available, held = balance(user, OUT)
        asks = Order.objects.filter(user=user, market=pair.output_market, side="sell",
                                    status__in=OPEN_STATUSES)  # fmt: skip
        open_asks = asks.aggregate(total=Sum("hold_remaining"))["total"] or 0
        assert available + held == remaining
        assert held == sum(lot.reserved_tokens for lot in lots) + open_asks
    assert_audit_ok()
