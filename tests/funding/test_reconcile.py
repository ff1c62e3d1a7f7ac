"""Reconciliation against Stripe's balance transactions finds a planted difference."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.funding.models import Deposit
from accounts.funding.reconciliation import reconcile_run
from accounts.funding.services import withdrawal_request
from exchange.ledger import services as ledger
from tests.funding.conftest import CNY, event, post_event

pytestmark = pytest.mark.django_db(transaction=True)


def _paid_deposits(
    stripe_on: Any, client: Any, api_client: Any, user: Any, amounts: list[str]
) -> None:
    api_client.force_authenticate(user)
    for n, amount in enumerate(amounts):
        api_client.post("/api/v1/deposits", {"currency": "CNY", "amount": amount}, format="json")
        deposit = Deposit.objects.order_by("-id").first()
        session = stripe_on.pay_session(deposit.stripe_session_id)
        post_event(client, event(f"evt_rec_{n}", "checkout.session.completed", session))


def test_clean_books_match_and_a_planted_difference_is_found(
    make_user: Any, provider: Any, client: Any, api_client: Any, stripe_on: Any
) -> None:
    buyer = make_user()
    _paid_deposits(stripe_on, client, api_client, buyer, ["10", "20.50", "30"])
    ledger.deposit_credit(
        user=provider, currency="CNY", amount=100 * CNY, reference="t", idempotency_key="t1"
    )
    withdrawal_request(user=provider, currency="CNY", amount="15")
    since, until = timezone.now() - timedelta(hours=1), timezone.now() + timedelta(minutes=1)

    report = reconcile_run(since=since, until=until)
    assert report.differences == []
    assert report.matched == 4

    # Planted: Stripe charged one deposit differently, and made a transfer we know nothing of.
    stripe_on.balance_transactions[1]["amount"] = 2049
    stripe_on.balance_transactions.append(
        {
            **stripe_on.balance_transactions[-1],
            "id": "txn_planted",
            "source": stripe_on.transfers[0]["id"],
        }
    )
    stripe_on.objects["tr_planted"] = {"id": "tr_planted", "object": "transfer", "metadata": {}}
    stripe_on.balance_transactions[-1]["source"] = "tr_planted"
    report = reconcile_run(since=since, until=until)
    kinds = sorted(item["kind"] for item in report.differences)
    assert kinds == ["deposit_amount_differs", "transfer_not_recorded"]
    assert "20.50000000 CNY" in str(report.differences)

    out = StringIO()
    with pytest.raises(CommandError, match="2 difference"):
        call_command(
            "stripe_reconcile",
            "--since",
            (timezone.now() - timedelta(days=1)).date().isoformat(),
            stdout=out,
        )
    assert "deposit_amount_differs" in out.getvalue()
    assert "tr_planted" in out.getvalue()


def test_a_credited_deposit_missing_at_stripe_is_reported(make_user: Any, stripe_on: Any) -> None:
    user = make_user()
    deposit = Deposit.objects.create(
        user=user, currency="CNY", amount=5 * CNY, stripe_session_id="cs_ghost"
    )
    credit = ledger.deposit_credit(
        user=user, currency="CNY", amount=5 * CNY, reference="x", idempotency_key="x"
    )
    Deposit.objects.filter(pk=deposit.pk).update(
        status="credited", credit_transaction=credit, credited_at=timezone.now()
    )
    report = reconcile_run(
        since=timezone.now() - timedelta(hours=1), until=timezone.now() + timedelta(minutes=1)
    )
    assert [item["kind"] for item in report.differences] == ["deposit_without_charge"]
