"""1,000 deposits paid, some refunded or disputed, every event delivered three times in
shuffled order (refunds before payments among them): exactly 1,000 credits, and the same
final balances for every shuffle. On PostgreSQL, concurrent copies of the same events too."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from accounts.funding.models import Deposit, StripeEvent
from accounts.funding.services import stripe_event_record
from accounts.funding.webhooks import event_verify
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.selectors import balance_get
from tests.funding.conftest import CNY, charge_refunded, dispute, session_completed, sign

pytestmark = pytest.mark.django_db(transaction=True)

DEPOSITS = 1000
USERS = 40


def _scenario(run: str, users: list[Any]) -> tuple[list[bytes], dict[int, dict[str, int]]]:
    """Deposits of ``users`` and their events; the expected balance per user index."""
    deposits = Deposit.objects.bulk_create(
        [
            Deposit(
                user=users[i % USERS],
                currency="USD" if i % 7 == 0 else "CNY",
                amount=(1 + i % 97) * CNY + (i % 100) * CNY // 100,
                stripe_session_id=f"cs_{run}_{i}",
            )
            for i in range(DEPOSITS)
        ]
    )
    deposits = list(
        Deposit.objects.filter(stripe_session_id__startswith=f"cs_{run}_").order_by("id")
    )
    events: list[bytes] = []
    expected: dict[int, dict[str, int]] = {i: Counter() for i in range(USERS)}
    for i, deposit in enumerate(deposits):
        events.append(session_completed(deposit, f"evt_{run}_paid_{i}"))
        if i % 20 == 0:  # a second event for the same session
            events.append(
                session_completed(
                    deposit, f"evt_{run}_async_{i}", type="checkout.session.async_payment_succeeded"
                )
            )
        taken = 0
        if i % 10 == 3:  # partial refund, and for some the rest later (cumulative amounts)
            half = deposit.amount // 2 // 1_000_000 * 1_000_000
            events.append(charge_refunded(deposit, f"evt_{run}_refund_{i}", half))
            taken = half
            if i % 30 == 3:
                events.append(charge_refunded(deposit, f"evt_{run}_refund2_{i}", deposit.amount))
                taken = deposit.amount
        elif i % 33 == 5:  # disputed; a third of them won
            events.append(
                dispute(
                    deposit, f"evt_{run}_dp_{i}", status="needs_response", amount=deposit.amount
                )
            )
            taken = deposit.amount
            if i % 99 == 5:
                events.append(
                    dispute(deposit, f"evt_{run}_dpwon_{i}", status="won", amount=deposit.amount)
                )
                taken = 0
        expected[i % USERS][deposit.currency] += deposit.amount - taken
    return events, expected


def _deliver(payload: bytes) -> None:
    stripe_event_record(event=event_verify(payload=payload, signature=sign(payload)))


def _balances(users: list[Any]) -> dict[int, dict[str, int]]:
    result = {}
    for index, user in enumerate(users):
        row = {}
        for currency in ("CNY", "USD"):
            balance = balance_get(user=user, asset=currency)
            assert balance.held == 0
            if balance.available:
                row[currency] = balance.available
        result[index] = row
    return result


def _credits(run: str) -> int:
    keys = LedgerTransaction.objects.filter(
        kind="deposit", idempotency_key__endswith=":credit", reference__startswith="deposit:"
    )
    return keys.filter(
        reference__in=[
            f"deposit:{pk}"
            for pk in Deposit.objects.filter(
                stripe_session_id__startswith=f"cs_{run}_"
            ).values_list("pk", flat=True)
        ]
    ).count()


def test_every_shuffle_credits_each_deposit_once_with_the_same_balances(
    stripe_on: Any, make_user: Any
) -> None:
    outcomes = []
    for run, seed in (("a", 1), ("b", 2)):
        users = [make_user() for _ in range(USERS)]
        events, expected = _scenario(run, users)
        deliveries = events * 3
        random.Random(seed).shuffle(deliveries)
        for payload in deliveries:
            _deliver(payload)

        assert _credits(run) == DEPOSITS
        assert (
            Deposit.objects.filter(
                stripe_session_id__startswith=f"cs_{run}_", status="credited"
            ).count()
            == DEPOSITS
        )
        assert StripeEvent.objects.filter(stripe_id__startswith=f"evt_{run}_").count() == len(
            events
        )
        assert not StripeEvent.objects.exclude(status="processed").exists()
        balances = _balances(users)
        assert balances == {i: {c: a for c, a in row.items() if a} for i, row in expected.items()}
        outcomes.append(balances)
    assert outcomes[0] == outcomes[1]


def test_the_http_webhook_redelivery_is_acknowledged_as_duplicate(
    stripe_on: Any, make_user: Any, client: Any
) -> None:
    from tests.funding.conftest import post_event

    user = make_user()
    deposit = Deposit.objects.create(
        user=user, currency="CNY", amount=5 * CNY, stripe_session_id="cs_http"
    )
    body = session_completed(deposit, "evt_http_1")
    assert post_event(client, body).json()["duplicate"] is False
    assert post_event(client, body).json()["duplicate"] is True
    assert balance_get(user=user, asset="CNY").available == 5 * CNY


def test_concurrent_copies_credit_once(postgres: None, stripe_on: Any, make_user: Any) -> None:
    users = [make_user() for _ in range(USERS)]
    deposits = Deposit.objects.bulk_create(
        [
            Deposit(
                user=users[i % USERS],
                currency="CNY",
                amount=(i + 1) * CNY,
                stripe_session_id=f"cs_c_{i}",
            )
            for i in range(120)
        ]
    )
    deposits = list(Deposit.objects.filter(stripe_session_id__startswith="cs_c_").order_by("id"))
    events = []
    for i, deposit in enumerate(deposits):
        events.append(session_completed(deposit, f"evt_c_paid_{i}"))
        events.append(
            session_completed(
                deposit, f"evt_c_again_{i}", type="checkout.session.async_payment_succeeded"
            )
        )
        if i % 4 == 0:
            events.append(charge_refunded(deposit, f"evt_c_refund_{i}", deposit.amount))
    copies = 4
    barrier = threading.Barrier(copies)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        order = list(events)
        random.Random(index).shuffle(order)
        try:
            barrier.wait()
            for payload in order:
                _deliver(payload)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    with ThreadPoolExecutor(copies) as pool:
        list(pool.map(worker, range(copies)))
    assert errors == []
    assert (
        Deposit.objects.filter(stripe_session_id__startswith="cs_c_", status="credited").count()
        == 120
    )
    assert _credits("c") == 120
    assert StripeEvent.objects.filter(stripe_id__startswith="evt_c_").count() == len(events)
    for index, user in enumerate(users):
        expected = sum((i + 1) * CNY for i in range(120) if i % USERS == index and i % 4 != 0)
        assert balance_get(user=user, asset="CNY").available == expected
