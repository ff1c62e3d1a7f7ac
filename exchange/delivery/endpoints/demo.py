"""Demo data: the demo providers' endpoints on the demo upstream (``exchange.delivery.gateway.
demo_upstream``, served by this process under ``/demo-upstream`` when DEMO_UPSTREAM is on).

The three demo providers behave differently, so that routing, fallback and SLA credits show:
Alpha Cloud is fast, Beta Inference slow (misses every demo market's first-token and speed
levels), Gamma GPU fails one request in four before its first token. The behaviour travels in
the base URL (``/demo-upstream/p/ttft=2500,tps=15/v1``), as the demo upstream reads it.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from exchange.delivery.endpoints.crypto import secret_encrypt
from exchange.delivery.endpoints.models import Endpoint, HealthStatus

DEMO_MODEL_ID = "exchange-demo"  # the demo upstream lists this id (and accepts any)
DEMO_UPSTREAM_KEY = "demo-upstream-key"  # the demo upstream takes any bearer key
# Demo provider's email local part → demo upstream settings.
DEMO_BEHAVIOURS = {
    "alpha-cloud": "ttft=200,tps=120",  # fast: well inside every demo market's service level
    "beta-inference": "ttft=2500,tps=15",  # slow: misses max TTFT (≤2000 ms) and min 30 tok/s
    "gamma-gpu": "ttft=300,tps=90,fail=0.25",  # every 4th request fails before any token
}


def demo_upstream_root() -> str:
    """Where this process serves the demo upstream: ``DEMO_UPSTREAM_URL`` if set, else
    ``http://127.0.0.1:$PORT/demo-upstream`` (``make run``'s address, PORT 8000 by default)."""
    configured = getattr(settings, "DEMO_UPSTREAM_URL", "") or os.environ.get("DEMO_UPSTREAM_URL")
    if configured:
        return str(configured).rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/demo-upstream"


def demo_endpoints_register(*, root: str | None = None) -> list[Endpoint]:
    """Register (or refresh) each demo provider's endpoint for every market of a complete
    model pair. Idempotent. Demo data, so no check on save: the upstream is served by this
    very process, which may not listen yet when the demo seeds; the health probes check it
    from then on. Returns the endpoints."""
    from exchange.delivery.escrow.selectors import model_pairs
    from exchange.demo.seed import DEMO_DOMAIN

    base = (root or demo_upstream_root()).rstrip("/")
    emails = {f"{name}@{DEMO_DOMAIN}": name for name in DEMO_BEHAVIOURS}
    providers = list(User.objects.filter(email__in=emails).order_by("id"))
    markets = [market for pair in model_pairs() for market in pair.markets]
    now = timezone.now()
    endpoints = []
    with transaction.atomic():
        for provider in providers:
            url = f"{base}/p/{DEMO_BEHAVIOURS[emails[provider.email]]}/v1"
            for market in markets:
                endpoint = Endpoint.objects.filter(provider=provider, market=market).first()
                if endpoint is None:
                    endpoint = Endpoint.objects.create(
                        provider=provider,
                        market=market,
                        base_url=url,
                        api_key_ciphertext=secret_encrypt(DEMO_UPSTREAM_KEY),
                        model_id=DEMO_MODEL_ID,
                        concurrency_limit=16,
                        status=HealthStatus.HEALTHY,
                        last_checked_at=now,
                        last_success_at=now,
                    )
                elif (endpoint.base_url, endpoint.model_id) != (url, DEMO_MODEL_ID):
                    endpoint.base_url, endpoint.model_id = url, DEMO_MODEL_ID
                    endpoint.save(update_fields=["base_url", "model_id", "updated_at"])
                endpoints.append(endpoint)
    return endpoints
