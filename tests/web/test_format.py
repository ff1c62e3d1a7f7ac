"""The server's number and time formatters: one per kind, the same digits as format.js."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.template import Context, Template
from django.utils import translation

from exchange.markets.models import Market
from exchange.web.templatetags import web

MARKET = Market(tick_size=Decimal("0.01"), lot_size=Decimal("0.001"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12", "12.00"), ("5", "5.00"), ("13.2", "13.20"), ("1234.5", "1,234.50"),
     ("8.125", "8.125"), (None, "—"), ("", "—"), ("x", "—")],
)  # fmt: skip
def test_price_has_the_tick_decimals_and_grouping(value, expected) -> None:
    assert web.price(value, MARKET) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("13.2", "13.200"), ("13.11", "13.110"), ("2500", "2,500.000"), ("0.000001", "0.000001")],
)
def test_quantity_has_the_lot_decimals(value, expected) -> None:
    assert web.quantity(value, MARKET) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1000.00000000", "1,000.00"), ("15.015", "15.02"), ("0.025", "0.02"), ("0.035", "0.04"),
     ("983.96798", "983.97"), ("-984.985", "-984.98"), ("1234567.5", "1,234,567.50")],
)  # fmt: skip
def test_money_has_the_currency_decimals_rounded_half_to_even(value, expected) -> None:
    # half to even, as format.js asks Intl to round (roundingMode "halfEven")
    assert web.money(value, "CNY") == expected


def test_amount_is_a_quantity_for_token_assets_and_money_for_currencies() -> None:
    assert web.amount("1.5", MARKET) == "1.500"
    assert web.amount("1.5", "USD") == "1.50"


def test_percent_and_whole_numbers() -> None:
    assert web.percent("1.5") == "+1.50%"
    assert web.percent("-0.25") == "-0.25%"
    assert web.percent("0") == "0.00%"
    assert web.percent(None) == "—"
    assert web.thousands(2_000_000) == "2,000,000"
    assert web.thousands("1.5") == "—"


def test_chinese_uses_the_same_digits_through_the_locale() -> None:
    with translation.override("zh-hans"):
        assert web.money("1234.5", "CNY") == "1,234.50"
        assert web.price("8", MARKET) == "8.00"


def test_times_are_shown_in_utc_with_date_and_time_apart() -> None:
    east = timezone(timedelta(hours=8))
    moment = datetime(2027, 1, 4, 9, 10, 30, tzinfo=east)
    assert web.utc(moment) == "2027-01-04 01:10"
    assert web.utc(moment.isoformat()) == "2027-01-04 01:10"
    assert web.utc("2027-01-04T01:10:30+00:00", "Y-m-d H:i:s") == "2027-01-04 01:10:30"
    assert web.utc(None) == "—"
    assert web.utc(datetime(2027, 1, 4, 1, 10)) == "—"  # naive: refused, never guessed
    assert web.utc_clock("2027-01-04T01:10:05.123Z") == "01:10:05"
    assert web.utc_clock("1799025005123") == "01:10:05"  # milliseconds since the epoch
    assert web.utc_clock("yesterday") == "—"


def test_order_codes_are_put_in_words_in_both_languages() -> None:
    row = SimpleNamespace(status="cancelled", reason="stp")
    template = Template(
        "{% load web %}{{ row.status|order_status }}: {{ row.reason|cancel_reason }}"
    )
    english = template.render(Context({"row": row}))
    assert english == (
        "Cancelled: Cancelled by self-trade prevention: it would have traded with another order "
        "of yours."
    )
    with translation.override("zh-hans"):
        chinese = template.render(Context({"row": row}))
    assert "stp" not in chinese
    assert chinese != english
    assert web.cancel_reason("something_new") == "Cancelled (something_new)."
