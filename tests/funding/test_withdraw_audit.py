"""Issue #16: every use of ``withdraw`` is in the user's audit log, with IP and user agent."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.funding.models import Withdrawal
from accounts.models import AuditEvent
from accounts.services import api_key_create
from exchange.ledger import services as ledger
from tests.funding.conftest import CNY

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_withdrawal_by_key_is_audited(provider: Any, stripe_on: Any) -> None:
    ledger.deposit_credit(
        user=provider, currency="CNY", amount=100 * CNY, reference="test",
        idempotency_key=f"fund:{provider.pk}",
    )  # fmt: skip
    stripe_on.fault = lambda method, path, key, params: "ok"
    key = api_key_create(user=provider, name="payer", scopes=["read", "withdraw"])
    client = APIClient(HTTP_USER_AGENT="payout-bot/1.0", REMOTE_ADDR="192.0.2.44")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    response = client.post(
        "/api/v1/withdrawals", {"currency": "CNY", "amount": "12.50"}, format="json"
    )
    assert response.status_code == 201, response.json()
    withdrawal = Withdrawal.objects.get()
    event = AuditEvent.objects.get(action="withdrawal_requested")
    assert event.user == provider
    assert event.api_key_id == key.api_key.id
    assert event.ip == "192.0.2.44"
    assert event.user_agent == "payout-bot/1.0"
    assert event.details["withdrawal_id"] == withdrawal.id
    assert event.details["currency"] == "CNY"
    assert event.details["amount"] == "12.50000000"
    listed = client.get("/api/v1/audit-log").json()["results"]
    assert listed[0]["action"] == "withdrawal_requested"
