"""Withdrawals: held at once; one Stripe transfer per withdrawal whatever fails or times out."""

from __future__ import annotations

import random
from typing import Any

import pytest

from accounts.funding.models import ConnectedAccount, Withdrawal
from accounts.funding.tasks import withdrawal_payout_task
from accounts.services import api_key_create
from exchange.ledger import services as ledger
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.selectors import balance_get
from tests.funding.conftest import CNY

pytestmark = pytest.mark.django_db(transaction=True)


def _fund(user: Any, amount: int) -> None:
    ledger.deposit_credit(
        user=user,
        currency="CNY",
        amount=amount,
        reference="test",
        idempotency_key=f"fund:{user.pk}",
    )


def _bearer(api_client: Any, user: Any, scopes: list[str]) -> Any:
    created = api_key_create(user=user, name="bot", scopes=scopes)
    secret = created.secret
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return api_client


def test_withdrawal_is_held_then_paid_with_one_transfer(
    provider: Any, api_client: Any, stripe_on: Any
) -> None:
    _fund(provider, 100 * CNY)
    stripe_on.fault = lambda method, path, key, params: "ok"
    api_client.force_authenticate(provider)
    response = api_client.post(
        "/api/v1/withdrawals", {"currency": "CNY", "amount": "40.50"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "paid"
    assert body["amount"] == "40.50000000"
    withdrawal = Withdrawal.objects.get()
    assert balance_get(user=provider, asset="CNY") == (100 * CNY - 4050 * CNY // 100, 0)
    [call] = stripe_on.calls_to("/v1/transfers")
    assert call.idempotency_key == f"withdrawal-{withdrawal.pk}-transfer"
    assert call.params["amount"] == "4050"
    assert call.params["destination"] == "acct_ready"
    assert withdrawal.stripe_transfer_id == stripe_on.transfers[0]["id"]


def test_withdrawal_needs_the_withdraw_scope(provider: Any, api_client: Any) -> None:
    _fund(provider, 10 * CNY)
    client = _bearer(api_client, provider, ["read", "trade"])
    response = client.post("/api/v1/withdrawals", {"currency": "CNY", "amount": "1"}, format="json")
    assert response.status_code == 403
    assert Withdrawal.objects.count() == 0


def test_limits_per_withdrawal_and_per_day(provider: Any, api_client: Any, settings: Any) -> None:
    settings.FUNDING_WITHDRAWAL_MAX = "30"
    settings.FUNDING_WITHDRAWAL_DAILY_MAX = "50"
    _fund(provider, 1000 * CNY)
    api_client.force_authenticate(provider)

    def post(amount):
        return api_client.post(
            "/api/v1/withdrawals", {"currency": "CNY", "amount": amount}, format="json"
        )

    assert post("31").status_code == 400
    assert post("30").status_code == 201
    assert post("20").status_code == 201
    refused = post("1")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "withdrawal_limit_exceeded"
    assert Withdrawal.objects.count() == 2


def test_refusals_write_nothing(provider: Any, api_client: Any, make_user: Any) -> None:
    api_client.force_authenticate(provider)
    before = LedgerTransaction.objects.count()
    response = api_client.post(
        "/api/v1/withdrawals", {"currency": "CNY", "amount": "5"}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "insufficient_funds"
    buyer = make_user(role="buyer")
    api_client.force_authenticate(buyer)
    assert (
        api_client.post(
            "/api/v1/withdrawals", {"currency": "CNY", "amount": "5"}, format="json"
        ).status_code
        == 403
    )
    unconnected = make_user(role="provider")
    _fund(unconnected, 10 * CNY)
    api_client.force_authenticate(unconnected)
    response = api_client.post(
        "/api/v1/withdrawals", {"currency": "CNY", "amount": "5"}, format="json"
    )
    assert response.json()["error"]["code"] == "payout_account_not_ready"
    assert LedgerTransaction.objects.count() == before + 1  # only the funding above
    assert Withdrawal.objects.count() == 0


def test_200_payouts_with_failures_and_timeouts_never_pay_twice(
    provider: Any, stripe_on: Any
) -> None:
    _fund(provider, 10**6 * CNY)
    rng = random.Random(7)
    first_attempt: dict[str, str] = {}

    def fault(method: str, path: str, key: str | None, params: dict[str, str]) -> str:
        if path != "/v1/transfers":
            return "ok"
        if rng.random() >= 0.3:
            return "ok"
        choice = rng.choice(["error", "error500", "timeout_before", "timeout_after"])
        first_attempt.setdefault(key or "", choice)
        return choice

    stripe_on.fault = fault
    from accounts.funding.services import withdrawal_request

    withdrawals = [
        withdrawal_request(user=provider, currency="CNY", amount=str(1 + i % 50))
        for i in range(200)
    ]
    calls = stripe_on.calls_to("/v1/transfers")
    by_key: dict[str, list[Any]] = {}
    for call in calls:
        by_key.setdefault(call.idempotency_key, []).append(call)
    # Every attempt of a withdrawal carries its one key, with the same parameters.
    assert set(by_key) == {w.transfer_idempotency_key for w in withdrawals}
    for key, attempts in by_key.items():
        assert len({tuple(sorted(a.params.items())) for a in attempts}) == 1, key
    retried = sum(1 for attempts in by_key.values() if len(attempts) > 1)
    assert retried >= 20
    # No payout made twice: one transfer object per paid withdrawal, none for released ones.
    transfers_per_withdrawal = {}
    for transfer in stripe_on.transfers:
        transfers_per_withdrawal.setdefault(transfer["metadata"]["withdrawal_id"], []).append(
            transfer
        )
    assert all(len(t) == 1 for t in transfers_per_withdrawal.values())
    final = {w.pk: w for w in Withdrawal.objects.all()}
    assert {w.status for w in final.values()} <= {"paid", "released"}
    paid = [w for w in final.values() if w.status == "paid"]
    released = [w for w in final.values() if w.status == "released"]
    assert len(released) >= 5
    assert len(paid) >= 100
    assert {str(w.pk) for w in paid} == set(transfers_per_withdrawal)
    assert all(w.stripe_transfer_id == transfers_per_withdrawal[str(w.pk)][0]["id"] for w in paid)
    paid_total = sum(w.amount for w in paid)
    assert balance_get(user=provider, asset="CNY") == (10**6 * CNY - paid_total, 0)
    # Running the task again (a redelivery) changes nothing and calls nobody.
    before = len(stripe_on.calls)
    for withdrawal in withdrawals[:20]:
        withdrawal_payout_task.delay(withdrawal.pk)
    assert len(stripe_on.calls) == before


def test_connect_onboarding_creates_one_express_account(
    provider: Any, api_client: Any, stripe_on: Any, make_user: Any
) -> None:
    user = make_user(role="provider")
    api_client.force_authenticate(user)
    first = api_client.post("/api/v1/payout-account")
    assert first.status_code == 200
    assert first.json()["onboarding_url"].startswith(stripe_on.url + "/onboard/acct_")
    second = api_client.post("/api/v1/payout-account")
    assert second.status_code == 200
    assert len(stripe_on.calls_to("/v1/accounts")) == 1
    [create] = stripe_on.calls_to("/v1/accounts")
    assert create.params["type"] == "express"
    assert create.idempotency_key == f"user-{user.pk}-connect-account"
    links = stripe_on.calls_to("/v1/account_links")
    assert len(links) == 2
    assert all(call.idempotency_key for call in links)
    account = ConnectedAccount.objects.get(user=user)
    assert api_client.get("/api/v1/payout-account").json()["payouts_enabled"] is False
    stripe_on.enable_account(account.stripe_account_id)
    api_client.force_login(user)
    from django.test import Client

    browser = Client()
    browser.force_login(user)
    assert browser.get("/funding/payouts/connect/return/").status_code == 302
    account.refresh_from_db()
    assert account.payouts_enabled is True
    page = browser.get("/funding/payouts/")
    assert b'data-testid="connect-ready"' in page.content


def test_a_retried_withdrawal_with_its_client_request_id_pays_once(
    provider: Any, api_client: Any, stripe_on: Any
) -> None:
    _fund(provider, 100 * CNY)
    stripe_on.fault = lambda method, path, key, params: "ok"
    api_client.force_authenticate(provider)
    body = {"currency": "CNY", "amount": "10", "client_request_id": "payout-2026-11-28"}
    first = api_client.post("/api/v1/withdrawals", body, format="json")
    again = api_client.post("/api/v1/withdrawals", body, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Withdrawal.objects.count() == 1
    assert len(stripe_on.calls_to("/v1/transfers")) == 1
    assert balance_get(user=provider, asset="CNY") == (90 * CNY, 0)
    other = api_client.post("/api/v1/withdrawals", {**body, "amount": "11"}, format="json")
    assert other.status_code == 409
    assert Withdrawal.objects.count() == 1
