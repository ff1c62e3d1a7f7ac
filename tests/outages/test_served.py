"""Issue #16, finding 5, on a served instance (uvicorn, the runner embedded): PostgreSQL or
Redis cut under it through a relay (tests/outages/proxy.py) and restored, never the machine's
services themselves. Before the fix: 500s (the debug page under DEBUG), /healthz "ok", the
websocket closed 1011, nothing served again until ... and tracebacks on every runner commit."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from decimal import Decimal
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts.services import api_key_create
from orders.models import Order, Trade
from tests.asgi_server import asgi_server
from tests.orders.conftest import SYMBOL
from tests.outages.proxy import outage_proxy

pytestmark = pytest.mark.django_db(transaction=True)


def call(
    base: str, path: str, *, key: str | None = None, body: dict | None = None
) -> tuple[int, Message, Any]:
    headers = {"Accept": "application/json"} if path.startswith("/api/") else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer_headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, answer_headers, raw = error.code, error.headers, error.read()
    content_type = answer_headers.get("Content-Type", "")
    return status, answer_headers, json.loads(raw) if "json" in content_type else raw.decode()


def eventually(check, *, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def traders(make_user, fund, market) -> tuple[str, str]:
    seller, buyer = make_user(), make_user()
    fund(seller, tokens=10_000_000, market=market)
    fund(buyer, cny=1000)
    scopes = ["read", "trade"]
    return (
        api_key_create(user=seller, name="s", scopes=scopes).secret,
        api_key_create(user=buyer, name="b", scopes=scopes).secret,
    )


def test_postgres_cut_answers_503_writes_nothing_and_recovers_without_restart(
    postgres, redis_url, market, make_user, fund
) -> None:
    seller_key, buyer_key = traders(make_user, fund, market)
    db = connection.settings_dict
    with outage_proxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)) as proxy:
        url = f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{proxy.port}/{db['NAME']}"
        # the production defaults: a connection pool per process (short wait for the test)
        with asgi_server(DATABASE_URL=url, DATABASE_POOL="true", DATABASE_POOL_TIMEOUT="2") as (
            base,
            _,
        ):
            assert call(base, "/api/v1/markets")[0] == 200
            status, _, placed = call(
                base, "/api/v1/orders", key=seller_key,
                body={"market": SYMBOL, "side": "sell", "price": "8.20", "quantity": "1"},
            )  # fmt: skip
            assert status == 201, placed

            proxy.down()
            for path in ("/api/v1/markets", f"/api/v1/markets/{SYMBOL}/book", "/api/v1/orders"):
                status, headers, body = call(base, path, key=buyer_key)
                assert status == 503, (path, body)
                assert body["error"]["code"] == "service_unavailable"
                assert headers["Retry-After"] == "5"
            # an order (the bots' fast path), a page (HTML), readiness; liveness stays up
            status, headers, body = call(
                base, "/api/v1/orders", key=buyer_key,
                body={"market": SYMBOL, "side": "buy", "price": "8.20", "quantity": "1"},
            )  # fmt: skip
            assert (status, body["error"]["code"], headers["Retry-After"]) == (
                503,
                "service_unavailable",
                "5",
            )
            status, headers, page = call(base, "/")
            assert status == 503
            assert 'data-testid="service-unavailable"' in page
            status, _, health = call(base, "/healthz")
            assert (status, health["checks"]["database"]["ok"]) == (503, False)
            assert call(base, "/livez")[:1] == (200,)
            # nothing of the refused order was written
            assert Order.objects.filter(side="buy").count() == 0

            proxy.up()
            assert eventually(lambda: call(base, "/healthz")[0] == 200)
            status, _, taken = call(
                base, "/api/v1/orders", key=buyer_key,
                body={"market": SYMBOL, "side": "buy", "price": "8.20", "quantity": "1"},
            )  # fmt: skip
            assert status == 201, taken
            assert eventually(lambda: Trade.objects.count() == 1)


def _subscribe(ws: Any) -> list[dict]:
    ws.send(json.dumps({"op": "subscribe", "channels": ["book", "trades"], "markets": [SYMBOL]}))
    frames = [json.loads(ws.recv(timeout=10))]
    if frames[0].get("type") == "subscribed":
        frames.append(json.loads(ws.recv(timeout=10)))
    return frames


def _websocket(port: int) -> Any:
    return connect(f"ws://127.0.0.1:{port}/ws/v1", origin=f"http://127.0.0.1:{port}")


def test_redis_cut_the_runner_keeps_trading_and_publishes_again_when_it_returns(
    postgres, redis_url, market, make_user, fund, capfd
) -> None:
    seller_key, buyer_key = traders(make_user, fund, market)
    redis = urlsplit(settings.REDIS_URL)
    redis_proxy = outage_proxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    with (
        redis_proxy as proxy,
        asgi_server(REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0") as (
            base,
            port,
        ),
    ):
        order = {"market": SYMBOL, "side": "sell", "price": "8.20", "quantity": "1"}
        assert call(base, "/api/v1/orders", key=seller_key, body=order)[0] == 201

        proxy.down()
        # orders are taken and matched: the runner commits without Redis
        order = {"market": SYMBOL, "side": "sell", "price": "8.10", "quantity": "2"}
        assert call(base, "/api/v1/orders", key=seller_key, body=order)[0] == 201
        order = {"market": SYMBOL, "side": "buy", "price": "8.15", "quantity": "2.5"}
        status, _, taken = call(base, "/api/v1/orders", key=buyer_key, body=order)
        assert (status, taken["status"]) == (201, "partially_filled"), taken
        assert Trade.objects.count() == 1
        # market data from the database; readiness says degraded: the feed cannot be served
        status, _, book = call(base, f"/api/v1/markets/{SYMBOL}/book")
        assert status == 200
        assert [Decimal(level[1]) for level in book["bids"]] == [Decimal("0.5")]
        status, _, health = call(base, "/healthz")
        assert (status, health["status"], health["checks"]["redis"]["ok"]) == (
            200,
            "degraded",
            False,
        )
        # a websocket subscription is refused with a frame and "try again later" (1013)
        with _websocket(port) as ws:
            frames = _subscribe(ws)
            assert frames[0]["type"] == "error"
            assert frames[0]["code"] == "service_unavailable"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013

        proxy.up()
        assert eventually(lambda: call(base, "/healthz")[2]["status"] == "ok")
        # subscribers get the book the runner committed meanwhile, then new trades
        with _websocket(port) as ws:
            frames = _subscribe(ws)
            assert frames[0]["type"] == "subscribed"
            snapshot = frames[1]
            assert snapshot["type"] == "snapshot"
            assert (
                snapshot["checksum"] == call(base, f"/api/v1/markets/{SYMBOL}/book")[2]["checksum"]
            )
            order = {"market": SYMBOL, "side": "buy", "price": "8.20", "quantity": "1"}
            assert call(base, "/api/v1/orders", key=buyer_key, body=order)[0] == 201
            deadline = time.monotonic() + 10
            trades: list[dict] = []
            while not trades and time.monotonic() < deadline:
                frame = json.loads(ws.recv(timeout=10))
                if frame.get("channel") == "trades":
                    trades = frame["trades"]
            assert [Decimal(t["price"]) for t in trades] == [Decimal("8.2")]
    # the served process logged the outage, not a traceback per commit or per retry
    logged = capfd.readouterr().err
    assert "Traceback" not in logged, logged[-3000:]
    assert "unreachable" in logged
