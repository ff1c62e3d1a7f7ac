"""A complete model pair, a provider with capacity listed in both markets, funded buyers, and
helpers that trade through the real API and the inline engine runner."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import api_key_create
from exchange.delivery.escrow.models import Lot
from exchange.delivery.escrow.selectors import ModelPair, model_markets
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger import services as ledger
from exchange.ledger.models import Account, SystemAccount
from exchange.ledger.selectors import audit_run
from exchange.markets.models import Market
from exchange.markets.services import DEMO_MARKETS, market_create
from exchange.runner.embedded import inline_reset
from orders.capacity import capacity_list
from tests.delivery.endpoints.helpers import live_endpoint

IN, OUT = "QWEN3.6-PLUS-IN-CNY", "QWEN3.6-PLUS-OUT-CNY"
MODEL = "qwen3.6-plus"
CNY = 10**8
MTOK = 1_000_000


@pytest.fixture(autouse=True)
def _fresh_inline_runner():
    inline_reset()
    yield
    inline_reset()


@pytest.fixture
def pair(db: None) -> ModelPair:
    for symbol in (IN, OUT):
        spec = next(m for m in DEMO_MARKETS if m["symbol"] == symbol)
        market_create(
            **{**spec, "maker_fee_rate": Decimal("0.001"), "taker_fee_rate": Decimal("0.002")}
        )
    found = model_markets(MODEL)
    assert found is not None
    return found


class Trader:
    """A user with an API key, trading through the real API (the inline runner matches)."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self.client = APIClient()
        key = api_key_create(user=user, name="bot", scopes=["read", "trade"])
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")

    def order(self, **body: Any) -> dict[str, Any]:
        body.setdefault("type", "limit")
        response = self.client.post("/api/v1/orders", body, format="json")
        assert response.status_code in (200, 201), response.json()
        return response.json()


_counter = iter(range(1, 10**9))


def deposit(user: Any, cny: int) -> None:
    ledger.deposit_credit(
        user=user,
        currency="CNY",
        amount=cny * CNY,
        reference="test",
        idempotency_key=f"escrow-test-deposit-{next(_counter)}",
    )


@pytest.fixture
def make_trader(make_user: Callable[..., Any]) -> Callable[..., Trader]:
    def make(role: str = "buyer", cny: int = 0) -> Trader:
        trader = Trader(make_user(role=role))
        if cny:
            deposit(trader.user, cny)
        return trader

    return make


@pytest.fixture
def provider(make_trader: Callable[..., Trader], pair: ModelPair) -> Trader:
    """A provider listing 10 MTok in each market of the pair, for a day, asking 8 (out) and
    2 (in) CNY per MTok."""
    trader = make_trader(role="provider")
    for market in pair.markets:  # asks need a live delivery endpoint
        live_endpoint(trader.user, market)
    until = timezone.now() + timedelta(days=1)
    capacity_list(
        user=trader.user, market=pair.output_market, quantity="10", available_until=until,
        ask_price="8.00",
    )  # fmt: skip
    capacity_list(
        user=trader.user, market=pair.input_market, quantity="10", available_until=until,
        ask_price="2.00",
    )  # fmt: skip
    return trader


def balance(user: Any, asset: str) -> tuple[int, int]:
    found = ledger_selectors.balance_get(user=user, asset=asset)
    return found.available, found.held


def system_balance(system: str, asset: str) -> int:
    row = Account.objects.filter(owner__isnull=True, system=system, asset_id=asset).first()
    return row.available if row else 0


def escrow_balance(currency: str = "CNY") -> int:
    return system_balance(SystemAccount.ESCROW, currency)


def lot_state(lot: Lot) -> dict[str, Any]:
    lot.refresh_from_db()
    return {
        name: getattr(lot, name)
        for name in (
            "bought_tokens", "escrow_units", "reserved_tokens", "delivered_tokens",
            "credited_tokens", "unconsumed_tokens", "moved_tokens", "earned_units",
            "released_units", "fee_units", "credited_units", "moved_units",
        )
    } | {"closed": lot.closed_at is not None}  # fmt: skip


def assert_audit_ok() -> None:
    report = audit_run()
    assert report.is_ok, report.render()


def market_of(pair: ModelPair, symbol: str) -> Market:
    return pair.input_market if symbol == pair.input_market.symbol else pair.output_market
