"""Funding fixtures: Stripe switched on against a fake server on loopback, signed events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from accounts.funding.models import ConnectedAccount, Deposit
from tests.funding.fake_stripe import FakeStripe

WEBHOOK_SECRET = "whsec_test_secret_for_funding_tests"
CNY = 100_000_000  # one yuan in ledger units
FEN = CNY // 100


@pytest.fixture(autouse=True)
def eager_tasks() -> Iterator[None]:
    """Tasks run in-process at call time here, even when a broker is configured."""
    from exchange.celery import app

    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def stripe_on(
    settings: Any, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> FakeStripe:
    """Stripe configured with test keys, the library pointed at the fake server."""
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_ENABLED = True
    settings.STRIPE_TIMEOUT_SECONDS = 0.25
    monkeypatch.setattr(stripe, "api_base", fake_stripe.url)
    monkeypatch.setattr(stripe, "connect_api_base", fake_stripe.url)
    fake_stripe.timeout_seconds = 0.5
    return fake_stripe


def sign(
    payload: bytes | str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> str:
    text = payload.decode() if isinstance(payload, bytes) else payload
    return stripe.WebhookSignature.generate_signature_header(
        text, secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )


def event(event_id: str, event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2025-01-27.acacia",
            "created": int(time.time()),
            "type": event_type,
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()


def session_completed(deposit: Deposit, event_id: str, **changes: Any) -> bytes:
    kind = changes.pop("type", "checkout.session.completed")
    obj = {
        "id": deposit.stripe_session_id,
        "object": "checkout.session",
        "amount_total": deposit.amount // FEN,
        "currency": deposit.currency.lower(),
        "client_reference_id": str(deposit.pk),
        "metadata": {"deposit_id": str(deposit.pk), "user_id": str(deposit.user_id)},
        "payment_status": "paid",
        "status": "complete",
        "payment_intent": f"pi_{deposit.stripe_session_id}",
    }
    obj.update(changes)
    return event(event_id, kind, obj)


def charge_refunded(deposit: Deposit, event_id: str, refunded: int) -> bytes:
    obj = {
        "id": f"ch_{deposit.stripe_session_id}",
        "object": "charge",
        "payment_intent": f"pi_{deposit.stripe_session_id}",
        "amount": deposit.amount // FEN,
        "amount_refunded": refunded // FEN,
        "currency": deposit.currency.lower(),
        "refunded": refunded == deposit.amount,
        "metadata": {"deposit_id": str(deposit.pk)},
    }
    return event(event_id, "charge.refunded", obj)


def dispute(deposit: Deposit, event_id: str, *, status: str, amount: int) -> bytes:
    obj = {
        "id": f"dp_{deposit.stripe_session_id}",
        "object": "dispute",
        "charge": f"ch_{deposit.stripe_session_id}",
        "payment_intent": f"pi_{deposit.stripe_session_id}",
        "amount": amount // FEN,
        "currency": deposit.currency.lower(),
        "status": status,
        "metadata": {},
    }
    kind = "charge.dispute.created" if status == "needs_response" else "charge.dispute.closed"
    return event(event_id, kind, obj)


def post_event(client: Any, payload: bytes, signature: str | None = None) -> Any:
    headers = {"HTTP_STRIPE_SIGNATURE": sign(payload) if signature is None else signature}
    return client.post("/stripe/webhook", data=payload, content_type="application/json", **headers)


@pytest.fixture
def provider(make_user: Any, stripe_on: FakeStripe) -> Any:
    """A provider whose connected account can receive transfers."""
    user = make_user(role="provider")
    ConnectedAccount.objects.create(
        user=user, stripe_account_id="acct_ready", details_submitted=True, payouts_enabled=True
    )
    return user
