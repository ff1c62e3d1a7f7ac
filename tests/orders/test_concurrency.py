"""Many clients placing and cancelling at once on PostgreSQL, with the runner as a thread."""

from __future__ import annotations

import contextlib
import random
import threading
import time

import pytest
from django.db import connection
from django.db.models import Sum

from exchange.errors import ExchangeError
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger.selectors import audit_run
from exchange.runner.loop import RunnerLoop
from orders.models import OPEN_STATUSES, Order, OrderCommand, Trade
from orders.services import order_cancel, order_place, order_request_parse
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8
ACTIONS = 60


def test_concurrent_place_and_cancel_keeps_ledger_and_holds_exact(
    postgres, settings, market, make_user, fund
) -> None:
    settings.ENGINE_RUNNER = "external"
    users = [make_user() for _ in range(THREADS)]
    for user in users:
        fund(user, cny=1_000, tokens=50_000_000, market=market)
    loop = RunnerLoop([SYMBOL], idle_sleep=0.002)
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    barrier = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def client(number: int) -> None:
        rng = random.Random(number)
        mine: list[int] = []
        barrier.wait()
        try:
            for _ in range(ACTIONS):
                if mine and rng.random() < 0.35:
                    target = mine.pop(rng.randrange(len(mine)))
                    # it may have filled or been cancelled meanwhile: fine
                    with contextlib.suppress(ExchangeError):
                        order_cancel(user=users[number], order_id=target)
                    continue
                request = order_request_parse(
                    market=market,
                    side=rng.choice(["buy", "sell"]),
                    price=f"{rng.randint(795, 805) / 100:.2f}",
                    quantity=f"{rng.randint(1, 30) / 100:.2f}",
                    time_in_force=rng.choice(["GTC", "GTC", "IOC"]),
                )
                mine.append(order_place(user=users[number], request=request)[0].id)
        except BaseException as error:
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
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
    assert not OrderCommand.objects.filter(seq__isnull=True).exists()
    assert not Order.objects.filter(status="pending").exists()
    assert Trade.objects.exists()
    assert Order.objects.filter(status="cancelled", cancel_reason="user").exists()
    report = audit_run()
    assert report.is_ok, report
    for user in users:
        for asset in ("CNY", SYMBOL):
            held = ledger_selectors.balance_get(user=user, asset=asset).held
            open_holds = (
                Order.objects.filter(
                    user=user, hold_asset=asset, status__in=OPEN_STATUSES
                ).aggregate(total=Sum("hold_remaining"))["total"]
                or 0
            )
            assert held == open_holds
