from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.services import api_key_create
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger import services as ledger
from exchange.markets.models import Market
from exchange.markets.services import DEMO_MARKETS, market_create
from exchange.runner.embedded import inline_reset

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
            assert market is not None
            ledger.capacity_issue(
                user=user,
                market=market,
                tokens=tokens,
                reference="test",
                idempotency_key=f"test-issue-{next(counter)}",
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
