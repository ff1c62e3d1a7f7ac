"""Deposits: Checkout creation, states, the refund/dispute rule, and funding switched off."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.funding.models import Deposit
from exchange.ledger import services as ledger
from exchange.ledger.selectors import balance_get
from tests.funding.conftest import CNY, charge_refunded, dispute, post_event, session_completed

pytestmark = pytest.mark.django_db(transaction=True)


def test_deposit_creates_one_checkout_session(
    make_user: Any, api_client: Any, stripe_on: Any
) -> None:
    user = make_user()
    api_client.force_authenticate(user)
    response = api_client.post(
        "/api/v1/deposits", {"currency": "CNY", "amount": "120.25"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    deposit = Deposit.objects.get()
    assert body["status"] == "pending"
    assert body["amount"] == "120.25000000"
    assert body["checkout_url"] == f"{stripe_on.url}/pay/{deposit.stripe_session_id}"
    assert body["ledger_transaction"] is None
    [call] = stripe_on.calls_to("/v1/checkout/sessions")
    assert call.idempotency_key == f"deposit-{deposit.pk}-checkout"
    assert call.params["line_items[0][price_data][unit_amount]"] == "12025"
    assert call.params["metadata[deposit_id]"] == str(deposit.pk)
    assert call.params["payment_intent_data[metadata][deposit_id]"] == str(deposit.pk)
    assert call.params["client_reference_id"] == str(deposit.pk)
    assert call.params["mode"] == "payment"


def test_a_retried_deposit_request_returns_the_first_checkout(
    make_user: Any, api_client: Any, stripe_on: Any
) -> None:
    api_client.force_authenticate(make_user())
    body = {"currency": "CNY", "amount": "50", "client_request_id": "top-up-1"}
    first = api_client.post("/api/v1/deposits", body, format="json")
    again = api_client.post("/api/v1/deposits", body, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["checkout_url"] == first.json()["checkout_url"]
    assert Deposit.objects.count() == 1
    assert len(stripe_on.calls_to("/v1/checkout/sessions")) == 1
    conflict = api_client.post("/api/v1/deposits", {**body, "currency": "USD"}, format="json")
    assert conflict.status_code == 409


def test_paid_session_credits_and_shows_the_ledger_transaction(
    make_user: Any, api_client: Any, client: Any, stripe_on: Any
) -> None:
    user = make_user()
    api_client.force_authenticate(user)
    api_client.post("/api/v1/deposits", {"currency": "USD", "amount": "10"}, format="json")
    deposit = Deposit.objects.get()
    session = stripe_on.pay_session(deposit.stripe_session_id)
    from tests.funding.conftest import event

    assert (
        post_event(client, event("evt_pay", "checkout.session.completed", session)).status_code
        == 200
    )
    deposit.refresh_from_db()
    assert deposit.status == "credited"
    assert balance_get(user=user, asset="USD").available == 10 * CNY
    [row] = api_client.get("/api/v1/deposits").json()["results"]
    assert row["status"] == "credited"
    assert row["ledger_transaction"] == deposit.credit_transaction_id
    client.force_login(user)
    page = client.get("/funding/deposits/")
    assert f'data-testid="deposit-{deposit.pk}"'.encode() in page.content
    assert b"Credited" in page.content


def test_a_session_paying_another_amount_is_not_credited(
    make_user: Any, client: Any, stripe_on: Any
) -> None:
    user = make_user()
    deposit = Deposit.objects.create(
        user=user, currency="CNY", amount=10 * CNY, stripe_session_id="cs_x"
    )
    assert (
        post_event(client, session_completed(deposit, "evt_wrong", amount_total=1)).status_code
        == 200
    )
    deposit.refresh_from_db()
    assert deposit.status == "pending"
    assert balance_get(user=user, asset="CNY").available == 0


def test_expired_session_fails_the_deposit(make_user: Any, client: Any, stripe_on: Any) -> None:
    user = make_user()
    deposit = Deposit.objects.create(
        user=user, currency="CNY", amount=10 * CNY, stripe_session_id="cs_e"
    )
    body = session_completed(
        deposit,
        "evt_exp",
        type="checkout.session.expired",
        status="expired",
        payment_status="unpaid",
    )
    post_event(client, body)
    deposit.refresh_from_db()
    assert deposit.status == "failed"


def test_refund_of_spent_money_takes_what_is_available_and_records_a_shortfall(
    make_user: Any, client: Any, stripe_on: Any, caplog: Any
) -> None:
    user = make_user()
    deposit = Deposit.objects.create(
        user=user, currency="CNY", amount=10 * CNY, stripe_session_id="cs_s"
    )
    post_event(client, session_completed(deposit, "evt_s1"))
    ledger.hold_place(
        user=user, asset="CNY", amount=7 * CNY, reference="order:1", idempotency_key="h1"
    )
    post_event(client, charge_refunded(deposit, "evt_s2", 10 * CNY))
    deposit.refresh_from_db()
    assert deposit.reversed_amount == 3 * CNY
    assert deposit.reversal_shortfall == 7 * CNY
    assert balance_get(user=user, asset="CNY") == (0, 7 * CNY)
    assert "could not be taken back" in caplog.text


def test_dispute_takes_the_money_back_and_a_won_dispute_returns_it(
    make_user: Any, client: Any, stripe_on: Any
) -> None:
    user = make_user()
    deposit = Deposit.objects.create(
        user=user, currency="CNY", amount=10 * CNY, stripe_session_id="cs_d"
    )
    post_event(client, session_completed(deposit, "evt_d1"))
    post_event(client, dispute(deposit, "evt_d2", status="needs_response", amount=10 * CNY))
    assert balance_get(user=user, asset="CNY").available == 0
    post_event(client, dispute(deposit, "evt_d3", status="won", amount=10 * CNY))
    assert balance_get(user=user, asset="CNY").available == 10 * CNY
    post_event(client, dispute(deposit, "evt_d4", status="needs_response", amount=10 * CNY))  # late
    assert balance_get(user=user, asset="CNY").available == 10 * CNY


def test_refund_event_without_metadata_waits_for_its_payment(
    make_user: Any, client: Any, stripe_on: Any
) -> None:
    user = make_user()
    deposit = Deposit.objects.create(
        user=user, currency="CNY", amount=10 * CNY, stripe_session_id="cs_w"
    )
    body = dispute(deposit, "evt_w1", status="needs_response", amount=4 * CNY)
    post_event(client, body)
    from accounts.funding.models import StripeEvent

    assert StripeEvent.objects.get(stripe_id="evt_w1").status == "received"
    post_event(client, session_completed(deposit, "evt_w2"))
    assert StripeEvent.objects.get(stripe_id="evt_w1").status == "processed"
    assert balance_get(user=user, asset="CNY").available == 6 * CNY


def test_without_stripe_keys_funding_is_off(
    make_user: Any, api_client: Any, client: Any, settings: Any
) -> None:
    settings.STRIPE_SECRET_KEY = ""
    settings.STRIPE_ENABLED = False
    user = make_user(role="both")
    api_client.force_authenticate(user)
    for path in ("/api/v1/deposits", "/api/v1/withdrawals"):
        response = api_client.post(path, {"currency": "CNY", "amount": "10"}, format="json")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "funding_disabled"
    assert api_client.get("/api/v1/deposits").status_code == 200
    client.force_login(user)
    page = client.get("/funding/deposits/")
    assert b'data-testid="funding-off"' in page.content
    assert b"This exchange is not accepting deposits." in page.content
    assert b"ledger_adjust" not in page.content  # never a shell command for a user
    assert client.post("/funding/deposits/", {"currency": "CNY", "amount": "10"}).status_code == 200
    assert b'data-testid="funding-off"' in client.get("/funding/payouts/").content
    assert Deposit.objects.count() == 0
