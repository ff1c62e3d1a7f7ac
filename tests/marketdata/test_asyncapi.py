"""The AsyncAPI document (/api/asyncapi/) describes what the websocket really sends: a live
server's frames — replies, errors, heartbeats, book, trades, ticker, candles and the user
channel — each validate against the message schema of their kind."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from rest_framework.test import APIClient
from websockets.sync.client import connect

from accounts.services import api_key_create
from exchange.delivery.endpoints.models import Endpoint
from tests.asgi_server import asgi_server
from tests.delivery.endpoints.helpers import live_endpoint
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)

BASE_URI = "urn:tokenexchange:asyncapi"


def document() -> dict[str, Any]:
    response = APIClient().get("/api/asyncapi/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    return yaml.safe_load(response.content)


def validators(doc: dict[str, Any]) -> dict[str, Draft7Validator]:
    registry = Registry().with_resource(
        BASE_URI, Resource.from_contents(doc, default_specification=DRAFT7)
    )
    return {
        name: Draft7Validator(
            {"$ref": f"{BASE_URI}#/components/messages/{name}/payload"}, registry=registry
        )
        for name in doc["components"]["messages"]
    }


def kind_of(frame: dict[str, Any]) -> str:
    channel = frame.get("channel")
    if channel == "book":
        return "bookSnapshot" if frame.get("type") == "snapshot" else "bookUpdate"
    if channel is not None:
        return "candle" if channel.startswith("candles:") else channel
    return frame["type"]


def test_the_document_is_asyncapi_3_and_served_as_json_too() -> None:
    doc = document()
    assert doc["asyncapi"].startswith("3.")
    assert APIClient().get("/api/asyncapi/?format=json").json() == doc
    for schema in doc["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)


def test_every_frame_of_a_live_session_matches_its_message_schema(
    postgres, redis_url, market, make_user, fund
) -> None:
    doc = document()
    check = validators(doc)
    seller, buyer = make_user(), make_user()
    fund(seller, tokens=10_000_000, market=market)
    fund(buyer, cny=1000)
    if not Endpoint.objects.filter(provider=seller, market=market).exists():
        live_endpoint(seller, market)
    seller_key = api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret
    buyer_key = api_key_create(user=buyer, name="b", scopes=["read", "trade"]).secret

    with (
        asgi_server(WS_HEARTBEAT_SECONDS="0.5", FEED_COALESCE_MS="0") as (base, port),
        connect(f"ws://127.0.0.1:{port}/ws/v1") as ws,
    ):
        frames: list[dict[str, Any]] = []

        def send(message: dict[str, Any]) -> None:
            ws.send(json.dumps(message))

        def drain(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    frames.append(json.loads(ws.recv(timeout=0.2)))
                except TimeoutError:
                    continue

        send({"op": "ping", "id": 1})
        send({"op": "subscribe", "channels": ["user"], "id": 2})  # before auth: an error
        send({"op": "auth", "key": buyer_key, "id": 3})
        send({"op": "subscribe", "id": 4, "markets": [SYMBOL],
              "channels": ["book", "trades", "ticker", "candles:1m", "user"]})  # fmt: skip
        send({"op": "subscribe", "channels": ["nope"], "markets": [SYMBOL]})
        send({"op": "dance"})
        drain(1.0)
        for key, body in (
            (seller_key, {"side": "sell", "price": "8.10", "quantity": "2"}),
            (buyer_key, {"side": "buy", "price": "8.10", "quantity": "0.5"}),
        ):
            request = urllib.request.Request(
                base + "/api/v1/orders", method="POST",
                data=json.dumps({"market": SYMBOL, **body}).encode(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=30):
                pass
        drain(2.0)
        send({"op": "unsubscribe", "channels": ["trades"], "markets": [SYMBOL], "id": 5})
        drain(1.0)

    seen = set()
    for frame in frames:
        kind = kind_of(frame)
        errors = [error.message for error in check[kind].iter_errors(frame)]
        assert errors == [], (kind, frame, errors)
        seen.add(kind)
    # every kind of server message was exercised, and checked
    assert seen == {
        "pong", "error", "authenticated", "subscribed", "unsubscribed", "heartbeat",
        "bookSnapshot", "bookUpdate", "trades", "ticker", "candle", "user",
    }  # fmt: skip
    user = [u for f in frames if f.get("channel") == "user" for u in f["updates"]]
    assert {u["kind"] for u in user} == {"order", "fill"}


def test_a_frame_in_another_shape_is_refused_by_the_schemas() -> None:
    check = validators(document())
    trade = {"id": 1, "price": "8.1", "quantity": "1", "taker_side": "buy"}
    good = {"channel": "trades", "market": SYMBOL,
            "trades": [{**trade, "time": "2026-12-05T06:40:01.123Z"}]}  # fmt: skip
    assert check["trades"].is_valid(good)
    for when in (1_764_916_801_123, "2026-12-05T06:40:01+00:00", "2026-12-05T06:40:01Z"):
        assert not check["trades"].is_valid({**good, "trades": [{**trade, "time": when}]})
    assert not check["heartbeat"].is_valid({"type": "heartbeat", "time": 1_764_916_801_123})
