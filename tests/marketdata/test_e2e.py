"""End to end: a real ASGI server process (uvicorn, with the runner embedded), the Redis channel
layer, a real websocket client library, orders placed over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from websockets.sync.client import connect

from accounts.services import api_key_create
from tests.marketdata.client import BookClient
from tests.orders.conftest import SYMBOL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(postgres, redis_url):
    db = connection.settings_dict
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}"
        f":{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "TEST_ENGINE_RUNNER": "embedded",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "exchange.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield base, port
    process.terminate()
    process.wait(timeout=20)


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
        while time.monotonic() < deadline and (client.seq is None or client.seq < final["seq"]
                                                or not trades):  # fmt: skip
            message = json.loads(ws.recv(timeout=5))
            messages.append(message)
            if message.get("channel") == "book":
                assert client.on_message(message) == "ok"
            elif message.get("channel") == "trades":
                trades.extend(message["trades"])
        assert client.seq == final["seq"]
        assert [(t["price"], t["quantity"], t["taker_side"]) for t in trades] == [
            ("8.1", "2", "buy")
        ]
        assert any(m.get("channel") == "ticker" and m["last"] == "8.1" for m in messages) or (
            json.loads(ws.recv(timeout=2))["last"] == "8.1"
        )
    bids, asks = client.levels()
    assert [[f"{p / 100:g}", f"{q / 1000:g}"] for p, q in bids] == [r[:2] for r in final["bids"]]
    assert [[f"{p / 100:g}", f"{q / 1000:g}"] for p, q in asks] == [r[:2] for r in final["asks"]]
    assert client.checksum() == final["checksum"]
    assert final["bids"][0][:2] == ["8.15", "0.5"]
