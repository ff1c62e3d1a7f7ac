"""One time format (issue 15): every GET endpoint of the API, walked with real data behind it,
answers every timestamp as RFC 3339 UTC with milliseconds and Z — no Unix seconds, no
milliseconds, no +00:00 — the CSV exports too; and every history list reads `since`/`until` as
that format or integer milliseconds, and refuses anything else. (The websocket's frames are
checked against the AsyncAPI document's Time schema: tests/marketdata/test_asyncapi.py.)"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from accounts.services import api_key_create
from exchange.delivery.endpoints.models import Endpoint
from exchange.times import ms_text, time_ms
from orders.models import Order
from tests.delivery.endpoints.helpers import live_endpoint
from tests.orders.conftest import (  # noqa: F401  (the trading fixtures)
    SYMBOL,
    _fresh_inline_runner,
    fund,
    market,
    place,
    trader,
)

pytestmark = pytest.mark.django_db(transaction=True)

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LOOKS_LIKE_A_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
TIME_KEY = re.compile(r"^(time|since|until)$|_(time|at|until|since)$|expiry$")
HISTORY = [
    f"/api/v1/markets/{SYMBOL}/trades", f"/api/v1/markets/{SYMBOL}/candles", "/api/v1/orders",
    "/api/v1/fills", "/api/v1/ledger", "/api/v1/deposits", "/api/v1/withdrawals",
    "/api/v1/generations", "/api/v1/audit-log",
]  # fmt: skip


def times_in(value: Any, where: str, found: list[tuple[str, Any]]) -> None:
    """Every value under a time-like key and every string that looks like a time."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if TIME_KEY.search(str(key)) and inner is not None:
                found.append((f"{where}.{key}", inner))
            times_in(inner, f"{where}.{key}", found)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            times_in(inner, f"{where}[{index}]", found)
    elif isinstance(value, str) and LOOKS_LIKE_A_TIME.search(value):
        found.append((where, value))


@pytest.fixture
def world(market, trader, fund, make_user):  # noqa: F811
    """A provider with an endpoint, a listing and asks; a buyer who traded; keys for both."""
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=5_000_000, market=market)
    fund(buyer.user, cny=500)
    if not Endpoint.objects.filter(provider=seller.user, market=market).exists():
        live_endpoint(seller.user, market)
    place(seller, side="sell", price="8.10", quantity="2", client_order_id="ask-1")
    place(buyer, side="buy", price="8.10", quantity="0.5")
    place(buyer, side="buy", price="7.50", quantity="0.5", client_order_id="bid-1")
    return seller, buyer


def answers(client: APIClient, seller_order: Order) -> dict[str, Any]:
    """Every GET operation of the document, with its path parameters filled in."""
    values = {
        "symbol": SYMBOL, "order_id": seller_order.id, "client_order_id": "ask-1",
        "endpoint_id": Endpoint.objects.filter(provider=seller_order.user).first().id,
    }  # fmt: skip
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = {}
    for path, operations in schema["paths"].items():
        if "get" not in operations or "{public_id}" in path:  # no generation here: a 404
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)
        query = (
            {"start": "2020-01-01", "end": "2100-01-01"} if path.endswith("statement.csv") else {}
        )
        response = client.get(url, query)
        assert response.status_code == 200, (url, response.content[:300])
        found[url] = response
    return found


def test_every_timestamp_of_every_answer_is_rfc3339_utc_with_milliseconds(world) -> None:
    seller, _ = world
    client = APIClient()
    key = api_key_create(user=seller.user, name="walk", scopes=["read", "trade", "keys"])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    found: list[tuple[str, Any]] = []
    kinds = set()  # the answers in which the walk met a timestamp
    checked_csv = 0
    for url, response in answers(client, Order.objects.get(client_order_id="ask-1")).items():
        before = len(found)
        if response["Content-Type"].startswith("text/csv"):
            rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
            for number, row in enumerate(rows):
                times_in(row, f"{url}#{number}", found)
            checked_csv += 1
        else:
            times_in(response.json(), url, found)
        if len(found) > before:
            kinds.add(url)
    wrong = [
        (where, value)
        for where, value in found
        if not (isinstance(value, str) and TIME.fullmatch(value))
    ]
    assert wrong == []
    assert checked_csv == 2
    # the walk did meet timestamps of every kind of answer
    assert {
        f"/api/v1/markets/{SYMBOL}/ticker", f"/api/v1/markets/{SYMBOL}/book",
        f"/api/v1/markets/{SYMBOL}/trades", f"/api/v1/markets/{SYMBOL}/candles",
        "/api/v1/tickers", "/api/v1/orders", "/api/v1/fills", "/api/v1/ledger",
        "/api/v1/ledger/statement.csv", "/api/v1/capacity", "/api/v1/api-keys",
        "/api/v1/audit-log", "/api/v1/provider/endpoints",
    } <= kinds  # fmt: skip


def test_every_history_list_reads_both_time_forms_and_refuses_others(world) -> None:
    seller, _ = world
    client = APIClient()
    key = api_key_create(user=seller.user, name="walk", scopes=["read"])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    for path in HISTORY:
        everything = client.get(path, {"since": "0"}).json()["results"]
        for since in ("2020-01-01T00:00:00.000Z", "1577836800000", "2020-01-01T08:00:00+08:00"):
            response = client.get(path, {"since": since})
            assert response.status_code == 200, (path, since)
            assert response.json()["results"] == everything, (path, since)
        assert client.get(path, {"until": "1577836800000"}).json()["results"] == []
        for bad in ("1577836800.5", "-1", "2020-01-01", "2020-01-01T00:00:00", "now"):
            response = client.get(path, {"since": bad})
            assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid"), (
                path, bad,
            )  # fmt: skip


def test_every_history_list_declares_the_same_paging_parameters() -> None:
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    for path in HISTORY:
        templated = path.replace(SYMBOL, "{symbol}")
        parameters = {p["name"]: p["schema"] for p in paths[templated]["get"]["parameters"]}
        assert {"since", "until", "limit", "cursor"} <= parameters.keys(), path
        assert parameters["limit"] == {
            "type": "integer", "minimum": 1, "maximum": 1000, "default": 100,
        }, path  # fmt: skip
        for name in ("since", "until"):
            forms = parameters[name]["oneOf"]
            assert {"type": "string", "format": "date-time"} in forms, path
            assert any(form.get("type") == "integer" for form in forms), path


def test_time_fields_of_bodies_take_both_forms(world) -> None:
    _, buyer = world
    later = time_ms(timezone.now()) + 3_600_000
    for form in (later, str(later), ms_text(later)):
        order = place(buyer, side="buy", price="7.00", quantity="0.01", time_in_force="GTD",
                      expire_time=form)  # fmt: skip
        assert order["expire_time"] == ms_text(later)
    refused = buyer.post(
        "/api/v1/orders",
        {"market": SYMBOL, "side": "buy", "price": "7.00", "quantity": "0.01",
         "time_in_force": "GTD", "expire_time": "in an hour"},
        format="json",
    )  # fmt: skip
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid")
