"""The /ws/v1 consumer, driven with Channels' WebsocketCommunicator."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.services import api_key_create
from exchange.asgi import application
from orders.services import order_place, order_request_parse
from tests.marketdata.client import BookClient
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]


def connect(headers=ORIGIN, **scope) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/v1", headers=headers)
    communicator.scope.update(scope)
    return communicator


def logged_in(user) -> list[tuple[bytes, bytes]]:
    """Handshake headers of a browser logged in as ``user``: a real session, which the private
    channel re-checks (a user put in the scope without one is refused)."""
    from django.test import Client

    browser = Client()
    browser.force_login(user)
    return [*ORIGIN, (b"cookie", f"sessionid={browser.cookies['sessionid'].value}".encode())]


@database_sync_to_async
def place(user, market, side, price, quantity):
    request = order_request_parse(market=market, side=side, price=price, quantity=quantity)
    return order_place(user=user, request=request)[0]


def run(coroutine_function):
    return async_to_sync(coroutine_function)()


def test_subscribe_ack_errors_and_bad_input_keep_the_connection(market) -> None:
    async def scenario():
        ws = connect()
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(
            {"op": "subscribe", "channels": ["trades"], "markets": [SYMBOL], "id": 7}
        )
        assert await ws.receive_json_from(timeout=5) == {
            "type": "subscribed", "id": 7, "channels": ["trades"], "markets": [SYMBOL],
        }  # fmt: skip
        await ws.send_json_to({"op": "subscribe", "channels": ["nope"], "markets": [SYMBOL]})
        error = await ws.receive_json_from(timeout=5)
        assert (error["type"], error["code"]) == ("error", "invalid_subscription")
        await ws.send_json_to({"op": "subscribe", "channels": ["book"], "markets": ["NOPE-X"]})
        assert "NOPE-X" in (await ws.receive_json_from(timeout=5))["message"]
        await ws.send_to(text_data="{not json")
        assert (await ws.receive_json_from(timeout=5))["code"] == "bad_json"
        await ws.send_to(text_data="x" * 5000)
        assert (await ws.receive_json_from(timeout=5))["code"] == "too_large"
        await ws.send_json_to({"op": "dance"})
        assert (await ws.receive_json_from(timeout=5))["code"] == "unknown_op"
        await ws.send_json_to({"op": "ping"})
        assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
        await ws.disconnect()

    run(scenario)


def test_rate_limit_per_connection(market, settings) -> None:
    settings.WS_RATE_BURST = 5
    settings.WS_RATE_PER_SECOND = 0.001

    async def scenario():
        ws = connect()
        await ws.connect()
        for _ in range(6):
            await ws.send_json_to({"op": "ping"})
        replies = [await ws.receive_json_from(timeout=5) for _ in range(6)]
        assert [r["type"] for r in replies] == ["pong"] * 5 + ["error"]
        assert replies[-1]["code"] == "rate_limited"
        await ws.disconnect()

    run(scenario)


def test_heartbeat(market, settings) -> None:
    settings.WS_HEARTBEAT_SECONDS = 0.05

    async def scenario():
        ws = connect()
        await ws.connect()
        assert (await ws.receive_json_from(timeout=2))["type"] == "heartbeat"
        await ws.disconnect()

    run(scenario)


def test_book_snapshot_then_updates_trades_ticker_and_candles(market, make_user, fund) -> None:
    seller, buyer = make_user(), make_user()
    fund(seller, tokens=5_000_000, market=market)
    fund(buyer, cny=100)

    async def scenario():
        await place(seller, market, "sell", "8.00", "2")
        ws = connect()
        await ws.connect()
        await ws.send_json_to(
            {"op": "subscribe", "channels": ["book", "trades", "ticker", "candles:1m"],
             "markets": [SYMBOL]}
        )  # fmt: skip
        assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
        snapshot = await ws.receive_json_from(timeout=5)
        assert (snapshot["channel"], snapshot["type"]) == ("book", "snapshot")
        assert snapshot["asks"] == [["8", "2"]]
        client = BookClient("0.01", "0.001")
        client.on_message(snapshot)
        ticker = await ws.receive_json_from(timeout=5)
        assert ticker["channel"] == "ticker"

        await place(buyer, market, "buy", "8.00", "0.5")
        seen = {}
        while len(seen) < 4:
            message = await ws.receive_json_from(timeout=3)
            seen.setdefault(message["channel"], message)
        update = seen["book"]
        assert update["type"] == "update"
        assert update["seq"] == snapshot["seq"] + 1
        assert client.on_message(update) == "ok"
        assert client.levels() == ([], [(800, 1500)])
        assert seen["trades"]["trades"][0] | {"id": 0, "time": 0} == {
            "id": 0, "price": "8", "quantity": "0.5", "taker_side": "buy", "time": 0,
        }  # fmt: skip
        assert seen["ticker"]["last"] == "8"
        candle = seen["candles:1m"]["candle"]
        assert (candle["open"], candle["close"], candle["volume"]) == ("8", "8", "0.5")
        await ws.disconnect()

    run(scenario)


def test_user_channel_needs_authentication_and_gets_only_my_fills(market, make_user, fund) -> None:
    seller, buyer, other = make_user(), make_user(), make_user()
    fund(seller, tokens=5_000_000, market=market)
    fund(buyer, cny=100)
    fund(other, cny=100)
    buyer_key = api_key_create(user=buyer, name="ws", scopes=["read"]).secret
    trade_only = api_key_create(user=other, name="ws", scopes=["trade"]).secret

    async def scenario():
        anonymous = connect()
        await anonymous.connect()
        await anonymous.send_json_to({"op": "subscribe", "channels": ["user"]})
        assert (await anonymous.receive_json_from(timeout=5))["code"] == "not_authenticated"
        await anonymous.send_json_to({"op": "auth", "key": trade_only})
        assert (await anonymous.receive_json_from(timeout=5))["code"] == "authentication_failed"
        await anonymous.send_json_to({"op": "auth", "key": "tx_bad_key"})
        assert (await anonymous.receive_json_from(timeout=5))["code"] == "authentication_failed"

        mine = connect()
        await mine.connect()
        await mine.send_json_to({"op": "auth", "key": buyer_key})
        assert (await mine.receive_json_from(timeout=5))["type"] == "authenticated"
        await mine.send_json_to({"op": "subscribe", "channels": ["user"]})
        assert (await mine.receive_json_from(timeout=5))["type"] == "subscribed"

        ask = await place(seller, market, "sell", "8.00", "1")
        await place(other, market, "buy", "8.00", "0.25")  # someone else's fill
        bid = await place(buyer, market, "buy", "8.00", "0.5")
        message = await mine.receive_json_from(timeout=3)
        assert message["channel"] == "user"
        kinds = {(u["kind"], u.get("id") or u.get("trade_id")) for u in message["updates"]}
        assert ("order", bid.id) in kinds
        assert ("order", ask.id) not in kinds
        fills = [u for u in message["updates"] if u["kind"] == "fill"]
        assert [(f["side"], f["quantity"], f["liquidity"]) for f in fills] == [
            ("buy", "0.5", "taker")
        ]
        assert await mine.receive_nothing(timeout=0.3)
        await mine.disconnect()
        await anonymous.disconnect()

    run(scenario)


def test_session_user_may_subscribe_to_user_channel(market, make_user) -> None:
    headers = logged_in(make_user())

    async def scenario():
        ws = connect(headers=headers)
        await ws.connect()
        await ws.send_json_to({"op": "subscribe", "channels": ["user"]})
        assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
        await ws.disconnect()

    run(scenario)


def test_foreign_origin_is_refused(market) -> None:
    async def scenario():
        ws = connect(headers=[(b"origin", b"https://evil.example.com")])
        connected, _ = await ws.connect()
        # told the socket is gone, as a server would: else its task stays parked on the layer
        await ws.disconnect()
        assert not connected

    run(scenario)


def test_private_subscription_is_renewed_before_the_layer_forgets_it(
    market, make_user, settings, monkeypatch
) -> None:
    """channels-redis drops group members after a day; the heartbeat re-joins the user group."""
    from channels.layers import get_channel_layer

    from exchange.marketdata import hub

    settings.WS_HEARTBEAT_SECONDS = 0.05
    monkeypatch.setattr(hub, "GROUP_RENEW_SECONDS", 0.1)
    user = make_user()
    headers = logged_in(user)
    layer = get_channel_layer()
    joins = []
    original = layer.group_add

    async def counting_group_add(group, channel):
        joins.append(group)
        return await original(group, channel)

    monkeypatch.setattr(layer, "group_add", counting_group_add)

    async def scenario():
        ws = connect(headers=headers)
        await ws.connect()
        await ws.send_json_to({"op": "subscribe", "channels": ["user"]})
        assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
        for _ in range(8):  # heartbeats, ~0.4 s
            assert (await ws.receive_json_from(timeout=2))["type"] == "heartbeat"
        await ws.disconnect()

    run(scenario)
    user_joins = [group for group in joins if group == f"user.{user.id}"]
    assert len(user_joins) >= 3
