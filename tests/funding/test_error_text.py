"""Issue #16, finding 8: Stripe's own error text (library messages, hostnames, request ids)
never reaches a client — a stable code and message, the details in the log — and the expected
refusal (503 funding_disabled) is logged at INFO, not ERROR."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import stripe

from accounts.funding.models import Deposit, Withdrawal
from accounts.funding.services import CHECKOUT_FAILED, TRANSFER_REFUSED
from exchange.ledger import services as ledger
from tests.funding.conftest import CNY
from tests.outages.proxy import dead_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_unreachable_stripe_is_a_stable_error_with_the_details_in_the_log(
    make_user: Any, api_client: Any, stripe_on: Any, monkeypatch: Any, caplog: Any
) -> None:
    port = dead_port()
    monkeypatch.setattr(stripe, "api_base", f"http://127.0.0.1:{port}")
    user = make_user()
    api_client.force_authenticate(user)
    caplog.set_level(logging.INFO)

    response = api_client.post(
        "/api/v1/deposits", {"currency": "CNY", "amount": "10"}, format="json"
    )

    assert response.status_code == 502
    assert response.json() == {
        "error": {
            "code": "payment_provider_error",
            "message": "The payment provider could not start the payment; nothing was "
            "charged. Please try again later.",
            "details": {},
        }
    }
    # what the user can read later says nothing of Stripe's internals either
    assert Deposit.objects.get().failure_reason == CHECKOUT_FAILED
    listed = api_client.get("/api/v1/deposits").json()
    assert str(port) not in str(listed)
    # the operator's log has them
    logged = [r.getMessage() for r in caplog.records if r.name == "accounts.funding.services"]
    assert any(str(port) in line or "unreachable" in line for line in logged), logged


def test_a_refused_transfer_tells_the_user_our_words_not_stripes(
    provider: Any, api_client: Any, stripe_on: Any, caplog: Any
) -> None:
    ledger.deposit_credit(
        user=provider, currency="CNY", amount=100 * CNY, reference="t", idempotency_key="f"
    )
    # the fake answers a definite 400 "Insufficient funds." (Stripe's platform balance)
    stripe_on.fault = lambda method, path, key, params: "error" if path == "/v1/transfers" else "ok"
    api_client.force_authenticate(provider)
    caplog.set_level(logging.INFO)

    response = api_client.post(
        "/api/v1/withdrawals", {"currency": "CNY", "amount": "10"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "released"
    assert response.json()["failure_reason"] == TRANSFER_REFUSED
    assert Withdrawal.objects.get().failure_reason == TRANSFER_REFUSED
    assert "Insufficient funds" not in str(api_client.get("/api/v1/withdrawals").json())
    assert any("Insufficient funds" in r.getMessage() for r in caplog.records)


def test_funding_disabled_is_an_expected_refusal_logged_at_info(
    make_user: Any, api_client: Any, caplog: Any, client: Any
) -> None:
    api_client.force_authenticate(make_user())
    caplog.set_level(logging.INFO)

    response = api_client.post(
        "/api/v1/deposits", {"currency": "CNY", "amount": "10"}, format="json"
    )
    webhook = client.post("/stripe/webhook", data=b"{}", content_type="application/json")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "funding_disabled"
    assert webhook.status_code == 503
    request_lines = [r for r in caplog.records if r.name == "django.request"]
    assert len(request_lines) == 2
    assert {r.levelno for r in request_lines} == {logging.INFO}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
