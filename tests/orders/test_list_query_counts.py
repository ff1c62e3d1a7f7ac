"""Every list endpoint and page reads a constant number of queries per page, however many rows
it shows (#16 finding 4: 3 queries per capacity listing made 4,600 listings an 8 s answer).

Each test measures a list with few rows and again with many, and pins both: an N+1 makes the
second count grow."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.funding.models import ConnectedAccount, Deposit, Withdrawal
from accounts.services import api_key_create
from exchange.delivery.gateway.models import Generation
from exchange.ledger import services as ledger
from exchange.markets.models import Market
from orders.capacity import capacity_list
from orders.models import CapacityListing
from tests.delivery.endpoints.helpers import live_endpoint
from tests.orders.conftest import SYMBOL, place

pytestmark = pytest.mark.django_db

FEW, MANY = 2, 12


def queries(fetch: Callable[[], object]) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = fetch()
    assert response.status_code == 200, getattr(response, "content", b"")[:300]
    return len(captured.captured_queries)


def bot(user, scopes=("read", "trade")) -> APIClient:
    client = APIClient()
    key = api_key_create(user=user, name="bot", scopes=list(scopes))
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    client.user = user
    return client


def page(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def assert_constant(
    fetch: Callable[[], object], grow: Callable[[int], None], most: int, many: int = MANY
) -> None:
    """``fetch`` costs the same with FEW and with ``many`` rows (``grow(n)`` adds n), at most
    ``most`` queries."""
    grow(FEW)
    fetch()  # warm per-process caches (content types, markets)
    with_few = queries(fetch)
    grow(many - FEW)
    with_many = queries(fetch)
    assert with_many == with_few, f"{with_few} queries with {FEW} rows, {with_many} with {many}"
    assert with_few <= most, f"{with_few} queries"


@pytest.fixture
def provider(make_user, market: Market):
    user = make_user(role="both")
    live_endpoint(user, market)
    return bot(user)


def listings(provider, market: Market) -> Callable[[int], None]:
    def grow(count: int) -> None:
        for _ in range(count):
            capacity_list(
                user=provider.user, market=market, quantity="2",
                available_until=timezone.now() + timedelta(days=1), ask_price="9.00",
            )  # fmt: skip

    return grow


def test_capacity_listings_api(provider, market, trader, fund) -> None:
    buyer = trader(role="buyer")
    fund(buyer.user, cny=1_000)
    add = listings(provider, market)

    def grow(count: int) -> None:
        add(count)
        place(buyer, side="buy", price="9.00", quantity="1")  # some sold, some resting

    assert_constant(lambda: provider.get("/api/v1/capacity"), grow, most=8)
    body = provider.get("/api/v1/capacity", {"limit": 5}).json()
    assert len(body["results"]) == 5
    assert body["next"] is not None
    newest = CapacityListing.objects.order_by("-id").first()
    assert body["results"][0]["id"] == newest.id
    sold = sum(
        float(row["sold_quantity"]) for row in provider.get("/api/v1/capacity").json()["results"]
    )
    assert sold == 2.0


def test_provider_dashboard(provider, market) -> None:
    client = page(provider.user)
    assert_constant(lambda: client.get("/provider/"), listings(provider, market), most=30)


def test_provider_dashboard_pages_its_listings(provider, market, settings) -> None:
    from exchange.web import views

    listings(provider, market)(3)
    settings_page = views.LISTINGS_PER_PAGE
    views.LISTINGS_PER_PAGE = 2
    try:
        body = page(provider.user).get("/provider/", {"page": 2}).content.decode()
    finally:
        views.LISTINGS_PER_PAGE = settings_page
    assert 'data-testid="listings-pager"' in body
    assert "Page 2 of 2" in body


def test_orders_and_fills(provider, market, trader, fund) -> None:
    buyer = trader(role="buyer")
    fund(buyer.user, cny=10_000)
    fund(provider.user, tokens=100 * 10**6, market=market)

    def grow(count: int) -> None:
        for _ in range(count):
            place(provider, side="sell", price="9.00", quantity="1")
            place(buyer, side="buy", price="9.00", quantity="1")

    assert_constant(lambda: buyer.get("/api/v1/orders"), grow, most=8)
    assert_constant(lambda: buyer.get("/api/v1/fills"), grow, most=8)
    panel = page(buyer.user)
    for tab in ("open", "history", "fills"):
        assert_constant(
            lambda tab=tab: panel.get(f"/trade/{SYMBOL}/orders/", {"tab": tab}), grow, most=30
        )


def test_ledger_and_balances(trader) -> None:
    user = trader(role="buyer")
    counter = iter(range(10**6))

    def grow(count: int) -> None:
        for _ in range(count):
            ledger.deposit_credit(
                user=user.user, currency="CNY", amount=10**8, reference="t",
                idempotency_key=f"q-{next(counter)}",
            )  # fmt: skip

    assert_constant(lambda: user.get("/api/v1/ledger"), grow, most=8)
    assert_constant(lambda: user.get("/api/v1/balances"), grow, most=8)


def test_deposits_and_withdrawals(trader) -> None:
    user = trader(role="both")
    account = ConnectedAccount.objects.create(user=user.user, stripe_account_id="acct_q")

    def grow(count: int) -> None:
        for _ in range(count):
            Deposit.objects.create(user=user.user, currency="CNY", amount=10**8)
            Withdrawal.objects.create(
                user=user.user, connected_account=account, currency="CNY", amount=10**8
            )

    assert_constant(lambda: user.get("/api/v1/deposits"), grow, most=8)
    assert_constant(lambda: user.get("/api/v1/withdrawals"), grow, most=8)
    assert_constant(lambda: page(user.user).get("/funding/deposits/"), grow, most=30)
    assert_constant(lambda: page(user.user).get("/funding/payouts/"), grow, most=30)


def test_api_keys_and_audit_log(make_user) -> None:
    user = make_user()
    client = bot(user, scopes=("read", "keys"))

    def grow(count: int) -> None:
        for number in range(count):
            api_key_create(user=user, name=f"k{number}", scopes=["read"])

    assert_constant(lambda: client.get("/api/v1/api-keys"), grow, most=8)
    assert_constant(lambda: client.get("/api/v1/audit-log"), grow, most=8)
    assert_constant(lambda: page(user).get("/accounts/api-keys/"), grow, most=30)


def test_provider_endpoints(make_user) -> None:
    from exchange.markets.services import DEMO_MARKETS, market_create

    user = make_user(role="provider")
    client = bot(user)
    specs = iter(DEMO_MARKETS)

    def grow(count: int) -> None:
        for _ in range(count):
            live_endpoint(user, market_create(**next(specs)))

    # one endpoint per market: as many rows as there are demo markets
    assert_constant(
        lambda: client.get("/api/v1/provider/endpoints"), grow, most=8, many=len(DEMO_MARKETS)
    )


def test_allocations_and_generations(provider, market, trader, fund) -> None:
    buyer = trader(role="buyer")
    fund(buyer.user, cny=10_000)
    add = listings(provider, market)
    counter = iter(range(10**6))

    def grow(count: int) -> None:
        add(count)
        for _ in range(count):
            place(buyer, side="buy", price="9.00", quantity="0.5")
            Generation.objects.create(
                public_id=f"gen-q{next(counter)}", buyer=buyer.user, provider=provider.user,
                model_id="m", input_market=market, output_market=market, currency="CNY",
                created_at=timezone.now(),
            )  # fmt: skip

    assert_constant(lambda: buyer.get("/api/v1/allocations"), grow, most=10)
    assert_constant(lambda: buyer.get("/api/v1/generations"), grow, most=8)
    assert_constant(lambda: page(buyer.user).get("/portfolio/"), grow, most=30)
    assert_constant(lambda: page(buyer.user).get("/use/"), grow, most=30)
