"""The shipped ccxt class's websocket half (tokenexchange_ccxt.pro) against a live exchange:
watch_order_book follows the book (snapshot, then updates by seq), watch_trades and
watch_ticker see a trade made meanwhile."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tokenexchange_ccxt.pro import tokenexchange

from accounts.services import api_key_create
from exchange.delivery.endpoints.models import Endpoint
from tests.asgi_server import asgi_server
from tests.delivery.endpoints.helpers import live_endpoint
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)

UNIFIED = "QWEN3.6-PLUS-OUT/CNY"


def order(base: str, key: str, **body: str) -> dict:
    response = httpx.post(
        base + "/api/v1/orders", json={"market": SYMBOL, **body},
        headers={"Authorization": f"Bearer {key}"}, timeout=30,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def test_watch_book_trades_and_ticker(postgres, redis_url, market, make_user, fund) -> None:
    seller, buyer = make_user(), make_user()
    fund(seller, tokens=10_000_000, market=market)
    fund(buyer, cny=1000)
    if not Endpoint.objects.filter(provider=seller, market=market).exists():
        live_endpoint(seller, market)
    seller_key = api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret
    buyer_key = api_key_create(user=buyer, name="b", scopes=["read", "trade"]).secret

    with asgi_server(FEED_COALESCE_MS="0") as (base, _):
        order(base, seller_key, side="sell", price="8.10", quantity="2")

        async def scenario() -> None:
            exchange = tokenexchange({"urls": {"api": {"rest": base + "/api/v1"}}})
            try:
                book = await asyncio.wait_for(exchange.watch_order_book(UNIFIED), 15)
                assert book["asks"][0] == [8.1, 2.0]
                assert book["nonce"] >= 1
                # watch_* answer with the next change: ask before the trade is made
                trades_task = asyncio.ensure_future(exchange.watch_trades(UNIFIED))
                book_task = asyncio.ensure_future(exchange.watch_order_book(UNIFIED))
                await asyncio.sleep(0.5)
                await asyncio.to_thread(
                    order, base, buyer_key, side="buy", price="8.10", quantity="0.5"
                )
                trades = await asyncio.wait_for(trades_task, 15)
                assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(8.1, 0.5, "buy")]
                book = await asyncio.wait_for(book_task, 15)
                assert book["asks"][0] == [8.1, 1.5]
                assert isinstance(book["timestamp"], int)
                ticker = await asyncio.wait_for(exchange.watch_ticker(UNIFIED), 15)
                assert (ticker["symbol"], ticker["last"]) == (UNIFIED, 8.1)
            finally:
                await exchange.close()

        asyncio.run(scenario())


class FakeClient:
    def __init__(self) -> None:
        self.resolved: list[tuple[object, str]] = []
        self.sent: list[dict] = []

    def resolve(self, value: object, message_hash: str) -> None:
        self.resolved.append((value, message_hash))

    async def send(self, message: dict) -> None:
        self.sent.append(message)


def test_a_gap_in_the_book_asks_for_a_fresh_snapshot() -> None:
    async def scenario() -> None:
        exchange = tokenexchange()
        exchange.set_markets([exchange.parse_market({
            "symbol": SYMBOL, "base": "QWEN3.6-PLUS-OUT", "quote_currency": "CNY",
            "status": "open", "tick_size": "0.01", "lot_size": "0.001", "min_quantity": "0.01",
            "maker_fee_rate": "0.001", "taker_fee_rate": "0.002",
        })])  # fmt: skip
        client = FakeClient()
        frame = {"channel": "book", "market": SYMBOL, "time": "2026-12-05T06:40:01.123Z"}
        exchange.handle_message(
            client, {**frame, "type": "snapshot", "seq": 5, "bids": [["8", "1"]], "asks": []}
        )
        exchange.handle_message(
            client, {**frame, "type": "update", "seq": 6, "bids": [["8", "0"]], "asks": []}
        )
        assert exchange.orderbooks[UNIFIED]["bids"] == []
        assert exchange.orderbooks[UNIFIED]["nonce"] == 6
        exchange.handle_message(  # seq 7 was lost
            client, {**frame, "type": "update", "seq": 8, "bids": [["7.9", "2"]], "asks": []}
        )
        await asyncio.sleep(0)
        assert UNIFIED not in exchange.orderbooks
        assert client.sent == [{"op": "subscribe", "channels": ["book"], "markets": [SYMBOL]}]
        assert len(client.resolved) == 2  # the snapshot and the update; never a broken book
        await exchange.close()

    asyncio.run(scenario())
