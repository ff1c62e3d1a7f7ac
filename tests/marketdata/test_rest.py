"""Market data maintained by the runner, served over REST."""

from __future__ import annotations

import re
import time

import pytest
from rest_framework.test import APIClient

from exchange.marketdata.models import INTERVALS, Candle
from exchange.times import seconds_text, time_text
from orders.models import MarketEngineState, Order
from tests.marketdata.client import BookClient
from tests.orders.conftest import SYMBOL, place

pytestmark = pytest.mark.django_db(transaction=True)

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_book_ticker_trades_and_candles_follow_the_trades(market, trader, fund) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=5_000_000, market=market)
    fund(buyer.user, cny=500)
    public = APIClient()
    assert public.get(f"/api/v1/markets/{SYMBOL}/book").json()["bids"] == []

    place(seller, side="sell", price="8.10", quantity="1")
    place(seller, side="sell", price="8.00", quantity="2")
    place(buyer, side="buy", price="7.90", quantity="1.5")
    place(buyer, side="buy", price="7.95", quantity="0.5")
    place(buyer, side="buy", price="8.00", quantity="0.75")  # trades 0.75 @ 8.00
    place(buyer, side="buy", price="8.10", quantity="1.5")  # 1.25 @ 8.00, 0.25 @ 8.10

    book = public.get(f"/api/v1/markets/{SYMBOL}/book?depth=5").json()
    assert book["bids"] == [["7.95", "0.5", 1], ["7.9", "1.5", 1]]
    assert book["asks"] == [["8.1", "0.75", 1]]
    assert book["seq"] == MarketEngineState.objects.get(market=market).book_seq == 6
    client = BookClient("0.01", "0.001")
    client.on_message(
        {"type": "snapshot", "seq": book["seq"], "bids": [row[:2] for row in book["bids"]],
         "asks": [row[:2] for row in book["asks"]], "checksum": book["checksum"]}
    )  # fmt: skip

    assert book["time"] == time_text(Order.objects.latest("updated_at").updated_at)
    trades = public.get(f"/api/v1/markets/{SYMBOL}/trades?limit=10").json()["results"]
    assert [(t["price"], t["quantity"], t["taker_side"]) for t in trades] == [
        ("8.1", "0.25", "buy"), ("8", "1.25", "buy"), ("8", "0.75", "buy"),
    ]  # fmt: skip

    ticker = public.get(f"/api/v1/markets/{SYMBOL}/ticker").json()
    assert ticker["last"] == "8.1"
    assert (ticker["bid"], ticker["ask"]) == ("7.95", "8.1")
    assert (ticker["open_24h"], ticker["high_24h"], ticker["low_24h"]) == ("8", "8.1", "8")
    assert ticker["volume_24h"] == "2.25"
    assert ticker["volume_tokens_24h"] == 2_250_000
    assert ticker["quote_volume_24h"] == "18.025"  # 2 × 8.00 + 0.25 × 8.10
    assert ticker["change_24h_percent"] == "1.25"

    assert Candle.objects.filter(market=market).values("interval").distinct().count() == len(
        INTERVALS
    )
    assert TIME.fullmatch(ticker["time"])
    assert all(TIME.fullmatch(t["time"]) for t in trades)
    response = public.get(f"/api/v1/markets/{SYMBOL}/candles?interval=1h").json()
    candle = response["results"][0]  # newest first
    assert (candle["open"], candle["high"], candle["low"], candle["close"]) == (
        "8", "8.1", "8", "8.1",
    )  # fmt: skip
    assert (candle["volume"], candle["trades"]) == ("2.25", 3)
    assert candle["time"] == seconds_text(int(time.time()) // 3600 * 3600)


def test_market_data_refuses_bad_parameters(market) -> None:
    public = APIClient()
    assert public.get(f"/api/v1/markets/{SYMBOL}/candles?interval=7m").status_code == 400
    assert public.get(f"/api/v1/markets/{SYMBOL}/book?depth=0").status_code == 400
    assert public.get(f"/api/v1/markets/{SYMBOL}/trades?limit=abc").status_code == 400
    assert public.get("/api/v1/markets/NOPE/ticker").status_code == 404
    for query in (
        "since=yesterday", "since=1733380801.5", "since=-5", "until=2026-12-05T06:40:01",
        "limit=0", "limit=1001", "limit=1e3", "cursor=abc", "cursor=cD1hYmM=",
        "since=253402300800000", "since=2026-13-01T00:00:00Z",
    ):  # fmt: skip
        for path in ("candles", "trades"):
            response = public.get(f"/api/v1/markets/{SYMBOL}/{path}?{query}")
            assert response.status_code == 400, (path, query)
            assert response.json()["error"]["code"] == "invalid"
