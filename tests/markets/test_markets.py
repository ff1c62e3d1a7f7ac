from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from rest_framework.test import APIClient

from exchange.errors import InvalidMarketConfiguration
from exchange.markets.models import Market
from exchange.markets.services import DEMO_MARKETS, market_create

pytestmark = pytest.mark.django_db


def spec(**overrides):
    base = dict(DEMO_MARKETS[0])
    base.update(symbol="TEST-OUT-CNY", **overrides)
    return base


def test_load_demo_markets_is_idempotent() -> None:
    call_command("load_demo_markets")
    call_command("load_demo_markets")
    assert Market.objects.count() == len(DEMO_MARKETS)
    currencies = set(Market.objects.values_list("quote_currency", flat=True))
    assert currencies == {"CNY", "USD"}


def test_refuses_tick_times_lot_finer_than_the_ledger_unit() -> None:
    with pytest.raises(InvalidMarketConfiguration) as error:
        market_create(**spec(tick_size=Decimal("0.00001"), lot_size=Decimal("0.000001")))
    assert "ledger unit" in error.value.message
    assert not Market.objects.filter(symbol="TEST-OUT-CNY").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lot_size", Decimal("0.0000005")),  # half a token
        ("tick_size", Decimal("0")),
        ("min_quantity", Decimal("0.0015")),  # not a multiple of the 0.001 lot
        ("taker_fee_rate", Decimal("0.5")),
        ("quote_currency", "EUR"),
    ],
)
def test_refuses_invalid_configurations(field: str, value) -> None:
    with pytest.raises(InvalidMarketConfiguration):
        market_create(**spec(**{field: value}))
    assert Market.objects.count() == 0


def test_admin_validation_raises_a_form_error() -> None:
    market = Market(**spec(tick_size=Decimal("0.00000001"), lot_size=Decimal("0.001")))
    with pytest.raises(ValidationError) as error:
        market.full_clean()
    assert "tick_size" in error.value.message_dict


def test_exact_units_of_a_demo_market() -> None:
    market = market_create(**spec())
    assert market.tokens_per_lot == 1000
    # 0.01 CNY/MTok × 0.001 MTok = 0.00001 CNY = 1,000 units of 1e-8 CNY
    assert market.units_per_tick_lot == 1000


def test_markets_api_lists_and_details() -> None:
    call_command("load_demo_markets")
    client = APIClient()
    listed = client.get("/api/v1/markets")
    assert listed.status_code == 200
    symbols = [m["symbol"] for m in listed.json()]
    assert "QWEN3.6-PLUS-OUT-CNY" in symbols
    detail = client.get("/api/v1/markets/QWEN3.6-PLUS-OUT-CNY").json()
    assert detail["tick_size"] == "0.01"
    assert detail["lot_size"] == "0.001"
    assert detail["tokens_per_lot"] == 1000
    assert detail["quote_currency"] == "CNY"
    missing = client.get("/api/v1/markets/NOPE")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "code": "market_not_found",
            "message": "Unknown market 'NOPE'.",
            "details": {"market": "NOPE"},
        }
    }


def test_openapi_schema_and_docs_are_served(client) -> None:
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/markets" in schema.content
    assert client.get("/api/docs/").status_code == 200
