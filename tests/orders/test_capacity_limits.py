"""Per-provider capacity limits and per-provider issuance (#16 finding 3): each refusal a 4xx
with its own code and nothing written; a provider driving every limit cannot block another
provider's listings, and the ledger stays in range and audits clean."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from exchange.ledger.models import Account, LedgerTransaction
from exchange.ledger.units import BIGINT_MAX
from orders.capacity import capacity_expire_due
from orders.models import CapacityListing
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db

MAX_LISTING_MTOK = "1000000"  # the default CAPACITY_MAX_LISTING_TOKENS, 10**12 tokens


def listing_body(quantity: str = "1", days: float = 1, market: str = SYMBOL) -> dict[str, str]:
    until = timezone.now() + timedelta(days=days)
    return {"market": market, "quantity": quantity, "available_until": until.isoformat()}


def post(client, **body) -> tuple[int, dict]:
    response = client.post("/api/v1/capacity", listing_body(**body), format="json")
    return response.status_code, response.json()


def written() -> tuple[int, int]:
    return CapacityListing.objects.count(), LedgerTransaction.objects.count()


def issuance(user) -> int:
    account = Account.objects.filter(system="capacity_issuance", issuer=user).first()
    return account.available if account else 0


def test_a_listing_larger_than_the_limit_is_refused(market, trader) -> None:
    provider = trader(role="provider")
    status, body = post(provider, quantity="1000000.001")
    assert status == 400
    assert body["error"]["code"] == "listing_too_large"
    assert body["error"]["details"] == {"max_tokens": 10**12}
    assert written() == (0, 0)
    assert post(provider, quantity=MAX_LISTING_MTOK)[0] == 201


def test_available_until_past_the_horizon_is_refused(market, trader) -> None:
    provider = trader(role="provider")
    status, body = post(provider, days=90.01)
    assert status == 400
    assert body["error"]["code"] == "available_until_too_far"
    assert "90 days" in body["error"]["message"]
    assert written() == (0, 0)
    # the year 9999 of the finding
    response = provider.post(
        "/api/v1/capacity",
        {"market": SYMBOL, "quantity": "1", "available_until": "9999-12-31T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert written() == (0, 0)
    assert post(provider, days=89.9)[0] == 201


def test_the_number_of_live_listings_is_limited(market, trader, settings) -> None:
    settings.CAPACITY_MAX_ACTIVE_LISTINGS = 3
    provider = trader(role="provider")
    for _ in range(3):
        assert post(provider)[0] == 201
    before = written()
    status, body = post(provider)
    assert status == 403
    assert body["error"]["code"] == "too_many_listings"
    assert written() == before
    # a listing that ended (retired) no longer counts
    CapacityListing.objects.filter(id=CapacityListing.objects.first().id).update(
        available_until=timezone.now() - timedelta(seconds=1)
    )
    capacity_expire_due()
    assert post(provider)[0] == 201


def test_live_capacity_per_provider_and_market_is_limited(market, trader, settings) -> None:
    settings.CAPACITY_MAX_OUTSTANDING_TOKENS = 5 * 10**6
    provider = trader(role="provider")
    assert post(provider, quantity="3")[0] == 201
    before = written()
    status, body = post(provider, quantity="2.001")
    assert status == 403
    assert body["error"]["code"] == "capacity_limit_reached"
    assert body["error"]["details"] == {"max_tokens": 5 * 10**6, "listed_tokens": 3 * 10**6}
    assert written() == before
    assert post(provider, quantity="2")[0] == 201


def test_a_provider_at_every_limit_does_not_block_another(market, trader, settings) -> None:
    # given: an attacker listing maximal listings, ending as late as allowed, until refused
    settings.CAPACITY_MAX_ACTIVE_LISTINGS = 25
    attacker, other = trader(role="provider"), trader(role="provider")
    accepted, refusals = 0, set()
    for _ in range(30):
        status, body = post(attacker, quantity=MAX_LISTING_MTOK, days=89.9)
        if status == 201:
            accepted += 1
        else:
            refusals.add((status, body["error"]["code"]))
    limit = django_settings.CAPACITY_MAX_OUTSTANDING_TOKENS
    assert accepted == limit // 10**12 == 10
    assert refusals == {(403, "capacity_limit_reached")}
    assert issuance(attacker.user) == -limit

    # when: another provider lists the largest listing allowed
    status, body = post(other, quantity=MAX_LISTING_MTOK, days=89.9)

    # then: it is accepted, from its own issuance account; the ledger is in range and sound
    assert status == 201, body
    assert issuance(other.user) == -(10**12)
    assert not Account.objects.filter(system="capacity_issuance", issuer=None).exists()
    extreme = max(abs(a.available) + abs(a.held) for a in Account.objects.all())
    assert extreme <= limit < BIGINT_MAX
    call_command("ledger_audit")  # raises (exit 2) on any mismatch


@pytest.mark.django_db(transaction=True)
def test_concurrent_listings_of_one_provider_cannot_pass_the_limit_together(
    market, trader, settings
) -> None:
    settings.CAPACITY_MAX_OUTSTANDING_TOKENS = 10 * 10**6
    provider = trader(role="provider")
    start = threading.Barrier(6)
    statuses: list[int] = []

    def list_six() -> None:
        try:
            start.wait()
            statuses.append(post(provider, quantity="3")[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=list_six) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 201, 201, 403, 403, 403]
    assert CapacityListing.objects.count() == 3
    assert issuance(provider.user) == -9 * 10**6
    call_command("ledger_audit")


def test_only_the_listing_service_issues_capacity() -> None:
    # Tokens issued outside a listing would sell without a listing behind them (#13 review
    # finding 4): the listing service is the one caller of the ledger's capacity_issue.
    root = Path(django_settings.BASE_DIR)
    callers = sorted(
        str(path.relative_to(root))
        for package in ("accounts", "exchange", "orders")
        for path in (root / package).rglob("*.py")
        if "capacity_issue(" in path.read_text()
    )
    assert callers == [
        "exchange/ledger/bench.py",
        "exchange/ledger/services.py",
        "orders/capacity.py",
    ]
