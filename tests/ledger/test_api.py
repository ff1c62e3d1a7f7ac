"""GET /api/v1/balances, /api/v1/ledger and the CSV statement."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import api_key_create
from exchange.ledger import services
from tests.ledger.conftest import CNY, SYMBOL, fund, issue

BASE = SYMBOL.removesuffix("-CNY")  # the market's base: the token asset's code in the API

pytestmark = pytest.mark.django_db


def client_for(user, scopes=("read",)) -> APIClient:
    client = APIClient()
    secret = api_key_create(user=user, name="bot", scopes=scopes).secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def trader(make_user, market):
    user = make_user()
    fund(user, 100 * CNY + 50_000_000)  # 100.5 CNY
    fund(user, 1, currency="USD")  # one ledger unit: 0.00000001 USD
    issue(user, market, 2_500_000)
    services.hold_place(
        user=user, asset="CNY", amount=25 * CNY, reference="order:1", idempotency_key="h1"
    )
    services.hold_place(
        user=user, asset=SYMBOL, amount=1_000, reference="order:2", idempotency_key="h2"
    )
    return user


def test_balances_in_display_units(trader) -> None:
    response = client_for(trader).get("/api/v1/balances")
    assert response.status_code == 200
    assert response.json() == {
        "balances": [
            {"asset": "CNY", "kind": "currency", "unit": "CNY", "available": "75.50000000", "held": "25.00000000", "total": "100.50000000"},
            {
                "asset": BASE, "kind": "token", "unit": "MTok", "market": SYMBOL,
                "available": "2.499000", "held": "0.001000", "total": "2.500000",
                "tokens": {"available": 2_499_000, "held": 1_000, "total": 2_500_000},
            },
            {"asset": "USD", "kind": "currency", "unit": "USD", "available": "0.00000001", "held": "0.00000000", "total": "0.00000001"},
        ]
    }  # fmt: skip


def test_balances_of_a_new_user_are_empty(make_user) -> None:
    assert client_for(make_user()).get("/api/v1/balances").json() == {"balances": []}


def test_ledger_needs_the_read_scope(trader) -> None:
    for path in ("/api/v1/balances", "/api/v1/ledger", "/api/v1/ledger/statement.csv"):
        response = client_for(trader, scopes=("trade",)).get(path)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"
        assert APIClient().get(path).status_code == 401


def test_ledger_lists_own_postings_newest_first(trader, make_user) -> None:
    fund(make_user(), 999)  # someone else's posting is never shown
    response = client_for(trader).get("/api/v1/ledger")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(r["kind"], r["asset"], r["bucket"], r["amount"]) for r in rows] == [
        ("hold", BASE, "held", "0.001000"),
        ("hold", BASE, "available", "-0.001000"),
        ("hold", "CNY", "held", "25.00000000"),
        ("hold", "CNY", "available", "-25.00000000"),
        ("capacity_issue", BASE, "available", "2.500000"),
        ("deposit", "USD", "available", "0.00000001"),
        ("deposit", "CNY", "available", "100.50000000"),
    ]
    assert rows[0]["reference"] == "order:2"
    assert {"id", "transaction", "created_at"} <= rows[0].keys()


def test_ledger_filters_by_asset_and_kind(trader) -> None:
    client = client_for(trader)
    assert [r["amount"] for r in client.get("/api/v1/ledger?asset=USD").json()["results"]] == [
        "0.00000001"
    ]
    kinds = {r["kind"] for r in client.get("/api/v1/ledger?kind=deposit").json()["results"]}
    assert kinds == {"deposit"}
    both = client.get(f"/api/v1/ledger?kind=hold&asset={BASE}").json()["results"]
    assert len(both) == 2
    assert client.get(f"/api/v1/ledger?kind=hold&asset={SYMBOL}").json()["results"] == both
    bad = client.get("/api/v1/ledger?kind=bogus")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid"


def test_ledger_cursor_pagination_walks_every_posting_once(trader) -> None:
    client = client_for(trader)
    seen, url = [], "/api/v1/ledger?limit=3"
    while url:
        page = client.get(url).json()
        seen += [r["id"] for r in page["results"]]
        url = page["next"]
    assert len(seen) == 7
    assert seen == sorted(seen, reverse=True)


def test_statement_csv_for_a_date_range(trader) -> None:
    today = timezone.now().date()
    response = client_for(trader).get(f"/api/v1/ledger/statement.csv?start={today}&end={today}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert f'filename="statement-{today}-{today}.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "created_at",
        "transaction",
        "kind",
        "reference",
        "asset",
        "bucket",
        "amount",
        "unit",
        "posting",
    ]
    assert [(r[2], r[4], r[5], r[6], r[7]) for r in rows[1:]] == [
        ("deposit", "CNY", "available", "100.50000000", "CNY"),
        ("deposit", "USD", "available", "0.00000001", "USD"),
        ("capacity_issue", BASE, "available", "2.500000", "MTok"),
        ("hold", "CNY", "available", "-25.00000000", "CNY"),
        ("hold", "CNY", "held", "25.00000000", "CNY"),
        ("hold", BASE, "available", "-0.001000", "MTok"),
        ("hold", BASE, "held", "0.001000", "MTok"),
    ]


def test_statement_outside_the_range_is_just_the_header(trader) -> None:
    day = timezone.now().date() - timedelta(days=3)
    response = client_for(trader).get(f"/api/v1/ledger/statement.csv?start={day}&end={day}")
    assert b"".join(response.streaming_content).decode().count("\n") == 1


@pytest.mark.parametrize(
    "query",
    ["", "?start=2026-01-02", "?start=2026-01-02&end=2026-01-01", "?start=x&end=2026-01-01"],
)
def test_statement_refuses_bad_ranges_in_the_error_shape(trader, query) -> None:
    response = client_for(trader).get(
        f"/api/v1/ledger/statement.csv{query}", HTTP_ACCEPT="text/csv"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
