"""Every badly signed, stale, future-dated, oversized or malformed webhook is a 400 that
writes nothing; a well-signed one is accepted."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from accounts.funding.models import Deposit, StripeEvent
from exchange.ledger.models import LedgerTransaction
from tests.funding.conftest import CNY, WEBHOOK_SECRET, event, post_event, sign

pytestmark = pytest.mark.django_db(transaction=True)


def _state() -> tuple[int, int, list[Any]]:
    return (
        StripeEvent.objects.count(),
        LedgerTransaction.objects.count(),
        list(Deposit.objects.values_list("id", "status", "credit_transaction_id")),
    )


@pytest.fixture
def deposit(stripe_on: Any, make_user: Any) -> Deposit:
    user = make_user()
    return Deposit.objects.create(
        user=user, currency="CNY", amount=25 * CNY, stripe_session_id="cs_sig"
    )


def _body(deposit: Deposit, n: int = 0) -> bytes:
    return event(
        f"evt_sig_{n}",
        "checkout.session.completed",
        {
            "id": "cs_sig",
            "object": "checkout.session",
            "amount_total": 2500,
            "currency": "cny",
            "client_reference_id": str(deposit.pk),
            "metadata": {"deposit_id": str(deposit.pk)},
            "payment_status": "paid",
            "payment_intent": "pi_sig",
        },
    )


def _v1(payload: bytes, timestamp: int, secret: str = WEBHOOK_SECRET) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _bad_requests(body: bytes) -> list[tuple[str, bytes, str | None]]:
    """(class, body, Stripe-Signature header or None for no header): at least 90 of them."""
    now = int(time.time())
    cases: list[tuple[str, bytes, str | None]] = []
    cases += [("no header", body, None)]
    cases += [("empty header", body, "")]
    for secret in ["whsec_wrong", WEBHOOK_SECRET + "x", WEBHOOK_SECRET[:-1], "", " "]:
        cases.append(("wrong secret", body, f"t={now},v1={_v1(body, now, secret)}"))
    # One byte of the body changed, at 30 positions across it (signature of the original).
    header = sign(body)
    for position in range(0, len(body), max(1, len(body) // 30))[:30]:
        changed = bytearray(body)
        changed[position] = (changed[position] + 1) % 256 or 1
        cases.append(("one byte changed", bytes(changed), header))
    cases.append(("byte appended", body + b" ", header))
    cases.append(("byte removed", body[:-1], header))
    for age in [301, 400, 3600, 86400, 10**6]:
        cases.append(("timestamp too old", body, sign(body, timestamp=now - age)))
    # 30 s beyond the tolerance: the cases are built before the requests are sent
    for ahead in [330, 600, 3600, 86400, 10**7]:
        cases.append(("timestamp in the future", body, sign(body, timestamp=now + ahead)))
    for age in [400, 3600, 86400]:
        old = _v1(body, now - age)
        cases.append(("old signature, new timestamp", body, f"t={now},v1={old}"))
    good = _v1(body, now)
    for scheme in ["v0", "v2", "V1", "s1", "sha256", "v1 "]:
        cases.append(("unknown scheme", body, f"t={now},{scheme}={good}"))
    for header_text in [
        f"v1={good}",
        f"t=,v1={good}",
        f"t=abc,v1={good}",
        f"t={now}",
        f"t={now},v1=",
        f"t={now};v1={good}",
        "garbage",
        f"t={now},v1={good[:-1]}",
        f"t={now},v1={good.upper()}",
        f"t={now}.5,v1={good}",
    ]:
        cases.append(("malformed header", body, header_text))
    big = body[:-1] + b', "padding": "' + b"x" * 300_000 + b'"}'
    cases.append(("oversized body", big, sign(big)))
    huge = b"{" + b" " * 262_200 + b"}"
    cases.append(("oversized body", huge, sign(huge)))
    for text in [
        b"",
        b"{",
        b"not json",
        b'{"id": "evt_x"',
        b"[]",
        b"null",
        b"42",
        b'"evt"',
        b'{"id": 1, "type": "checkout.session.completed", "data": {"object": {}}}',
        b'{"id": "evt_x", "type": "checkout.session.completed"}',
        b'{"id": "evt_x", "type": "checkout.session.completed", "data": []}',
        b'{"id": "evt_x", "type": 7, "data": {"object": {}}}',
        b'{"id": "notevt", "type": "charge.refunded", "data": {"object": {}}}',
        b"\xff\xfe\x00{}",
        b'{"id": "evt_x", "type": "checkout.session.completed", "data": {"object": {}}',
    ]:
        cases.append(
            (
                "malformed JSON",
                text,
                sign(text) if text.isascii() else f"t={now},v1={_v1(text, now)}",
            )
        )
    # Several signatures, none of them right; and a right one for another body.
    other = _v1(body + b"x", now)
    cases.append(("other body's signature", body, f"t={now},v1={other}"))
    cases.append(("several wrong signatures", body, f"t={now},v1={other},v1={'0' * 64}"))
    for n in range(8):
        cases.append(
            ("random signature", body, f"t={now},v1={hashlib.sha256(bytes([n])).hexdigest()}")
        )
    return cases


def test_every_bad_request_is_400_and_writes_nothing(client: Any, deposit: Deposit) -> None:
    body = _body(deposit)
    cases = _bad_requests(body)
    assert len(cases) >= 90
    assert len({name for name, _, _ in cases}) >= 12
    before = _state()
    for name, payload, header in cases:
        headers = {} if header is None else {"HTTP_STRIPE_SIGNATURE": header}
        response = client.post(
            "/stripe/webhook", data=payload, content_type="application/json", **headers
        )
        assert response.status_code == 400, (name, header, response.content[:200])
        assert response.json()["error"]["code"] == "invalid_webhook"
    assert _state() == before


def test_a_well_signed_event_is_accepted_and_credits(client: Any, deposit: Deposit) -> None:
    response = post_event(client, _body(deposit))
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    deposit.refresh_from_db()
    assert deposit.status == "credited"
    assert StripeEvent.objects.get().status == "processed"


def test_signature_at_the_edge_of_the_tolerance_is_accepted(client: Any, deposit: Deposit) -> None:
    body = _body(deposit)
    response = post_event(client, body, sign(body, timestamp=int(time.time()) - 290))
    assert response.status_code == 200
    response = post_event(
        client, _body(deposit, 1), sign(_body(deposit, 1), timestamp=int(time.time()) + 290)
    )
    assert response.status_code == 200


def test_unknown_event_types_are_acknowledged_and_ignored(client: Any, deposit: Deposit) -> None:
    before = _state()
    body = event("evt_unknown", "customer.created", {"id": "cus_1", "object": "customer"})
    response = post_event(client, body)
    assert response.status_code == 200
    assert response.json()["ignored"] is True
    assert _state() == before


def test_webhook_without_a_secret_configured_is_503(client: Any, settings: Any) -> None:
    settings.STRIPE_WEBHOOK_SECRET = ""
    body = json.dumps({"id": "evt_1"}).encode()
    response = post_event(client, body)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "funding_disabled"
    assert StripeEvent.objects.count() == 0
