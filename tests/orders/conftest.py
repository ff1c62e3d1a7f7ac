from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.onboarding import provider_grant, provider_is_approved
from accounts.services import api_key_create
from exchange.delivery.endpoints.models import Endpoint
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger import services as ledger
from exchange.markets.models import Market
from exchange.markets.services import DEMO_MARKETS, market_create
from exchange.runner.embedded import inline_reset
from orders.capacity import capacity_list
from tests.delivery.endpoints.helpers import live_endpoint

SYMBOL = "QWEN3.6-PLUS-OUT-CNY"
CNY = 10**8  # ledger units per CNY
MTOK = 1_000_000


@pytest.fixture(autouse=True)
def _fresh_inline_runner():
    inline_reset()
    yield
    inline_reset()


@pytest.fixture
def market(db: None) -> Market:
    spec = next(m for m in DEMO_MARKETS if m["symbol"] == SYMBOL)
    return market_create(
        **{**spec, "maker_fee_rate": Decimal("0.001"), "taker_fee_rate": Decimal("0.002")}
    )


@pytest.fixture
def fund() -> Callable[..., None]:
    counter = iter(range(1, 10**9))

    def fund(user, *, cny: int = 0, tokens: int = 0, market: Market | None = None) -> None:
        if cny:
            ledger.deposit_credit(
                user=user,
                currency="CNY",
                amount=cny * CNY,
                reference="test",
                idempotency_key=f"test-deposit-{next(counter)}",
            )
        if tokens:
            # through the capacity listing service, as every issuance (the user becomes an
            # approved provider with a live endpoint, which a provider's asks need)
            assert market is not None
            if not provider_is_approved(user=user):
                provider_grant(user=user, role="both", reason="Test fixture.")
            if not Endpoint.objects.filter(provider=user, market=market).exists():
                live_endpoint(user, market)
            capacity_list(
                user=user,
                market=market,
                quantity=str(Decimal(tokens) / MTOK),
                available_until=timezone.now() + timedelta(days=30),
            )

    return fund


@pytest.fixture
def trader(make_user) -> Callable[..., APIClient]:
    def make(role: str = "both", scopes: tuple[str, ...] = ("read", "trade")) -> APIClient:
        user = make_user(role=role)
        client = APIClient()
        key = api_key_create(user=user, name="bot", scopes=scopes)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
        client.user = user
        return client

    return make


def balance(user, asset: str) -> tuple[int, int]:
    b = ledger_selectors.balance_get(user=user, asset=asset)
    return b.available, b.held


def place(client: APIClient, **body) -> dict:
    body.setdefault("market", SYMBOL)
    response = client.post("/api/v1/orders", body, format="json")
    assert response.status_code in (200, 201), response.json()
    return response.json()
