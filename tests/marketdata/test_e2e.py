"""End to end: a real ASGI server process (uvicorn, with the runner embedded), the Redis channel
layer, a real websocket client library, orders placed over HTTP."""

from __future__ import annotations

import json
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from websockets.sync.client import connect

from accounts.services import api_key_create
from tests.asgi_server import asgi_server
from tests.marketdata.client import BookClient
from tests.orders.conftest import SYMBOL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(postgres, redis_url):
    with asgi_server() as running:
        yield running


def text(units: int, step: str) -> str:
    return format((Decimal(step) * units).normalize(), "f")


def post(base: str, key: str, body: dict) -> dict:
    request = urllib.request.Request(
        base + "/api/v1/orders", method="POST", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return json.loads(response.read())


def test_websocket_feed_over_a_real_server(server, market, make_user, fund) -> None:
    base, port = server
    seller, buyer = make_user(), make_user()
    fund(seller, tokens=10_000_000, market=market)
    fund(buyer, cny=1000)
    seller_key = api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret
    buyer_key = api_key_create(user=buyer, name="b", scopes=["read", "trade"]).secret

    with connect(f"ws://127.0.0.1:{port}/ws/v1", origin=f"http://127.0.0.1:{port}") as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": ["book", "trades", "ticker"],
                            "markets": [SYMBOL]}))  # fmt: skip
        assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"
        client = BookClient("0.01", "0.001")
        messages = []
        for body in (
            {"side": "sell", "price": "8.20", "quantity": "1"},
            {"side": "sell", "price": "8.10", "quantity": "2"},
            {"side": "buy", "price": "7.90", "quantity": "1.5"},
            {"side": "buy", "price": "8.15", "quantity": "2.5"},  # trades 2 @ 8.10, rests 0.5
        ):
            key = seller_key if body["side"] == "sell" else buyer_key
            assert post(base, key, {"market": SYMBOL, **body})["status"] != "pending"
        final = get(base, f"/api/v1/markets/{SYMBOL}/book")
        trades = []
        deadline = time.monotonic() + 10
        # The feed is coalesced (FEED_COALESCE_MS): read until the client's book, built from the
        # snapshot and the updates, is the server's (REST shows every commit at once, under the
        # last published seq).
        while time.monotonic() < deadline and (
            client.seq is None
            or client.seq < final["seq"]
            or client.checksum() != final["checksum"]
            or not trades
        ):
            message = json.loads(ws.recv(timeout=5))
            messages.append(message)
            if message.get("channel") == "book":
                assert client.on_message(message) == "ok"
            elif message.get("channel") == "trades":
                trades.extend(message["trades"])
            final = get(base, f"/api/v1/markets/{SYMBOL}/book")
        assert client.seq == final["seq"]
        assert [(t["price"], t["quantity"], t["taker_side"]) for t in trades] == [
            ("8.1", "2", "buy")
        ]
        assert any(m.get("channel") == "ticker" and m["last"] == "8.1" for m in messages) or (
            json.loads(ws.recv(timeout=2))["last"] == "8.1"
        )
    bids, asks = client.levels()

    def public(levels):
        return [[text(p, "0.01"), text(q, "0.001")] for p, q in levels]

    assert public(bids) == [row[:2] for row in final["bids"]]
    assert public(asks) == [row[:2] for row in final["asks"]]
    assert client.checksum() == final["checksum"]
    assert final["bids"][0][:2] == ["8.15", "0.5"]
