"""Array parameters reach PostgreSQL exactly as given, whichever way they are sent."""

from __future__ import annotations

import pytest

from exchange.db import array_param, server_bound_cursor, unique_row
from exchange.markets.models import Market
from exchange.markets.services import DEMO_MARKETS, market_create

TEXTS = [
    "open",
    "partially_filled",
    "QWEN3.6-PLUS-OUT-CNY",
    "order:12:hold",
    "runner:1:5-9",
    "null",
    "NULL",
    "Null",
    "",
    " padded ",
    'quo"te',
    "com,ma",
    "{brace}",
    "back\\slash",
    "tab\there",
    "naïve",
    "-",
    ".",
]


@pytest.mark.django_db
@pytest.mark.parametrize("sql_type", ["varchar", "text"])
def test_text_arrays_round_trip(postgres, sql_type: str) -> None:
    for values in ([t] for t in TEXTS):
        placeholder, param = array_param(values, sql_type)
        with server_bound_cursor() as cursor:
            cursor.execute(f"SELECT {placeholder}", [param])
            assert cursor.fetchone()[0] == values, values
    # plain words go as one literal, anything else in binary: both arrive as sent
    assert array_param(["QWEN3.6-PLUS-OUT-CNY", "order:12:hold"], sql_type)[0] == (
        f"%s::{sql_type}[]"
    )
    assert array_param(["com,ma"], sql_type)[0] == f"%b::{sql_type}[]"
    assert array_param(["null"], sql_type)[0] == f"%b::{sql_type}[]"
    words = ["open", "QWEN3.6-PLUS-OUT-CNY", "order:12:hold", None]
    placeholder, param = array_param(words, "varchar")
    with server_bound_cursor() as cursor:
        cursor.execute(f"SELECT {placeholder}", [param])
        assert cursor.fetchone()[0] == words


@pytest.mark.django_db
def test_integer_arrays_round_trip_and_refuse_what_is_not_an_int(postgres) -> None:
    values = [1, -2, None, 10**17]
    placeholder, param = array_param(values, "bigint")
    with server_bound_cursor() as cursor:
        cursor.execute(f"SELECT {placeholder}", [param])
        assert cursor.fetchone()[0] == values
    for bad in (True, 1.5, "3"):
        with pytest.raises(TypeError):
            array_param([1, bad], "bigint")


@pytest.mark.django_db
def test_unique_row_finds_the_row_without_ordering(postgres, django_assert_num_queries) -> None:
    symbol = market_create(**DEMO_MARKETS[0]).symbol
    with django_assert_num_queries(1) as queries:
        found = unique_row(Market.objects.filter(symbol=symbol))
    assert found is not None
    assert found.symbol == symbol
    assert "ORDER BY" not in queries.captured_queries[0]["sql"]
    assert unique_row(Market.objects.filter(symbol="NONE")) is None
