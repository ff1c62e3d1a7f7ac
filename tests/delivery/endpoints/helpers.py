"""Test helpers for other suites: give a provider a live endpoint without a network check
(the check itself is tested in tests/delivery/endpoints)."""

from __future__ import annotations

from django.utils import timezone

from exchange.delivery.endpoints.crypto import secret_encrypt
from exchange.delivery.endpoints.models import Endpoint, HealthStatus


def live_endpoint(user, market, base_url: str = "http://127.0.0.1:9/v1") -> Endpoint:
    now = timezone.now()
    return Endpoint.objects.create(
        provider=user,
        market=market,
        base_url=base_url,
        api_key_ciphertext=secret_encrypt("sk-test-not-a-real-key"),
        model_id="test-model",
        status=HealthStatus.HEALTHY,
        last_checked_at=now,
        last_success_at=now,
    )
