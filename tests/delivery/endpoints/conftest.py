from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.services import api_key_create
from exchange.ledger import services as ledger
from exchange.markets.models import Market
from exchange.markets.services import DEMO_MARKETS, market_create
from exchange.runner.embedded import inline_reset
from tests.delivery.endpoints.upstream_server import Behaviour, Upstream, upstream_server

OUT = "QWEN3.6-PLUS-OUT-CNY"
IN = "QWEN3.6-PLUS-IN-CNY"
CNY = 10**8


@pytest.fixture(autouse=True)
def _fresh_inline_runner() -> Iterator[None]:
    inline_reset()
    yield
    inline_reset()


def _market(symbol: str) -> Market:
    spec = next(m for m in DEMO_MARKETS if m["symbol"] == symbol)
    return market_create(
        **{**spec, "maker_fee_rate": Decimal("0.001"), "taker_fee_rate": Decimal("0.002")}
    )


@pytest.fixture
def market(db: None) -> Market:
    return _market(OUT)


@pytest.fixture
def input_market(db: None) -> Market:
    return _market(IN)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server(Behaviour()) as server:
        yield server


@pytest.fixture
def client_for(make_user) -> Callable[..., APIClient]:
    """An API client with a Bearer key of a new user of ``role``."""

    def make(role: str = "provider", scopes: tuple[str, ...] = ("read", "trade")) -> APIClient:
        user = make_user(role=role)
        client = APIClient()
        key = api_key_create(user=user, name="bot", scopes=scopes)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
        client.user = user
        return client

    return make


@pytest.fixture
def fund() -> Callable[..., None]:
    counter = iter(range(1, 10**9))

    def fund(user, *, cny: int) -> None:
        ledger.deposit_credit(
            user=user,
            currency="CNY",
            amount=cny * CNY,
            reference="test",
            idempotency_key=f"test-endpoints-deposit-{next(counter)}",
        )

    return fund
