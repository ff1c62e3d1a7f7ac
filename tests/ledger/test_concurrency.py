"""Concurrency on PostgreSQL: no double spend, no deadlock, idempotency under races.

Every thread uses its own database connection (Django's are per thread) and closes it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from exchange.errors import IdempotencyConflict, InsufficientFunds
from exchange.ledger import services
from exchange.ledger.models import Account, LedgerTransaction, Posting
from exchange.ledger.selectors import audit_run, balance_get
from tests.ledger.conftest import SYMBOL, exclusive, fund, issue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


def run_together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released at once; returns results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def thread(index: int) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=60)
            results[index] = work(index)
        except Exception as error:  # collected: the test asserts on every outcome
            results[index] = error
        finally:
            connection.close()

    with exclusive("threads"):
        threads = [threading.Thread(target=thread, args=(i,)) for i in range(count)]
        for started in threads:
            started.start()
        for finished in threads:
            finished.join(timeout=120)
    return results


def outcome(results: list[Any]) -> Counter[str]:
    return Counter(type(result).__name__ for result in results)


TAKERS: dict[str, Callable[..., Any]] = {
    "hold_place": lambda user, market, i: services.hold_place(
        user=user, asset="CNY", amount=10, reference="o", idempotency_key=f"h{i}"
    ),
    "withdrawal_hold": lambda user, market, i: services.withdrawal_hold(
        user=user, currency="CNY", amount=10, reference="w", idempotency_key=f"w{i}"
    ),
    "capacity_retire": lambda user, market, i: services.capacity_retire(
        user=user, market=market, tokens=10, reference="l", idempotency_key=f"c{i}"
    ),
    "negative adjustment": lambda user, market, i: services.adjustment_post(
        user=user, asset="CNY", amount=-10, reason="test", staff_user=None, idempotency_key=f"a{i}"
    ),
}


@pytest.mark.parametrize("operation", list(TAKERS))
def test_fifty_threads_taking_ten_from_a_hundred_exactly_ten_succeed(
    make_user, market, operation: str
) -> None:
    user = make_user()
    asset = SYMBOL if operation == "capacity_retire" else "CNY"
    if asset == "CNY":
        fund(user, 100)
    else:
        issue(user, market, 100)
    take = TAKERS[operation]

    results = run_together(50, lambda i: take(user, market, i))

    assert outcome(results) == {"LedgerTransaction": 10, "InsufficientFunds": 40}
    assert balance_get(user=user, asset=asset).available == 0
    assert LedgerTransaction.objects.count() == 1 + 10
    assert audit_run().is_ok


def test_contention_two_thousand_random_transfers_conserve_everything(make_user, market) -> None:
    users = [make_user() for _ in range(10)]
    for user in users:
        fund(user, 10**12)
        services.hold_place(
            user=user, asset="CNY", amount=10**11, reference="o", idempotency_key=f"hq{user.pk}"
        )
        issue(user, market, 10**9)
        services.hold_place(
            user=user, asset=SYMBOL, amount=10**8, reference="o", idempotency_key=f"ht{user.pk}"
        )
    fee_rates = (Decimal("0.001"), Decimal("0.002"))

    def transfers(thread: int) -> list[int]:
        generator = random.Random(thread)
        fees = 0
        for n in range(250):
            key = f"t{thread}:{n}"
            first, second = generator.sample(users, 2)
            choice = generator.random()
            if choice < 0.6:
                settled = services.trade_settle(
                    market=market, buyer=first, seller=second, tokens=generator.randint(1, 1000),
                    notional=generator.randint(1, 10**6), buyer_fee_rate=fee_rates[n % 2],
                    seller_fee_rate=fee_rates[1 - n % 2], reference=key, idempotency_key=key,
                )  # fmt: skip
                fees += settled.buyer_fee + settled.seller_fee
            elif choice < 0.75:
                services.hold_place(
                    user=first,
                    asset="CNY",
                    amount=generator.randint(1, 1000),
                    reference=key,
                    idempotency_key=key,
                )
            elif choice < 0.9:
                services.hold_release(
                    user=first,
                    asset="CNY",
                    amount=generator.randint(1, 1000),
                    reference=key,
                    idempotency_key=key,
                )
            else:
                services.adjustment_post(
                    user=first, asset=generator.choice(["CNY", SYMBOL]), amount=generator.choice([-1, 1]) * generator.randint(1, 99),
                    reason="contention test", staff_user=None, idempotency_key=key,
                )  # fmt: skip
        return [fees]

    results = run_together(8, transfers)

    assert [r for r in results if not isinstance(r, list)] == []  # no deadlock, no error at all
    fees = sum(r[0] for r in results)
    report = audit_run()
    assert report.is_ok, report.render()
    adjustments = {
        asset: -Account.objects.get(system="adjustments", asset_id=asset).available
        for asset in ("CNY", SYMBOL)
    }
    user_cny = sum(
        a.available + a.held for a in Account.objects.filter(owner__isnull=False, asset_id="CNY")
    )
    user_tokens = sum(
        a.available + a.held for a in Account.objects.filter(owner__isnull=False, asset_id=SYMBOL)
    )
    assert user_cny == 10 * 10**12 - fees + adjustments["CNY"]
    assert user_tokens == 10 * 10**9 + adjustments[SYMBOL]
    assert Account.objects.get(system="fee_revenue", asset_id="CNY").available == fees
    assert LedgerTransaction.objects.count() == 40 + 2_000


def test_the_same_key_concurrently_makes_one_transaction(make_user) -> None:
    user = make_user()

    results = run_together(
        20,
        lambda i: services.deposit_credit(
            user=user, currency="CNY", amount=100, reference="evt_1", idempotency_key="evt_1"
        ),
    )

    assert outcome(results) == {"LedgerTransaction": 20}
    assert len({result.pk for result in results}) == 1
    assert LedgerTransaction.objects.count() == 1
    assert Posting.objects.count() == 2
    assert balance_get(user=user, asset="CNY") == (100, 0)


def test_the_same_key_concurrently_with_different_bodies_makes_one_transaction(make_user) -> None:
    user = make_user()

    results = run_together(
        20,
        lambda i: services.deposit_credit(
            user=user, currency="CNY", amount=100 + i % 2, reference="e", idempotency_key="evt_2"
        ),
    )

    counts = outcome(results)
    assert counts["LedgerTransaction"] + counts["IdempotencyConflict"] == 20
    amounts = {100 + i % 2 for i, r in enumerate(results) if isinstance(r, LedgerTransaction)}
    assert len(amounts) == 1  # every winner made the same request as the first one
    assert all(isinstance(r, LedgerTransaction | IdempotencyConflict) for r in results)
    assert LedgerTransaction.objects.count() == 1
    assert balance_get(user=user, asset="CNY").available == amounts.pop()


def test_insufficient_funds_is_the_only_refusal_under_a_race(make_user) -> None:
    """Holds and releases racing on one account: only clean refusals, and the sums add up."""
    user = make_user()
    fund(user, 1_000)

    def work(i: int) -> Any:
        if i % 2:
            return services.hold_place(
                user=user, asset="CNY", amount=100, reference="o", idempotency_key=f"h{i}"
            )
        return services.hold_release(
            user=user, asset="CNY", amount=50, reference="o", idempotency_key=f"r{i}"
        )

    results = run_together(30, work)

    assert all(isinstance(r, LedgerTransaction | InsufficientFunds) for r in results)
    holds = sum(1 for i, r in enumerate(results) if i % 2 and isinstance(r, LedgerTransaction))
    releases = sum(
        1 for i, r in enumerate(results) if not i % 2 and isinstance(r, LedgerTransaction)
    )
    assert balance_get(user=user, asset="CNY") == (
        1_000 - 100 * holds + 50 * releases,
        100 * holds - 50 * releases,
    )
    assert audit_run().is_ok
