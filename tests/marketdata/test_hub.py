"""The process-local feed hub: one channel-layer subscription per process, event loop and market,
fanned out to every local connection; a stuck connection never holds up the others."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, channel_layers
from channels.testing import WebsocketCommunicator

from exchange.asgi import application
from exchange.marketdata import hub as hub_module
from exchange.marketdata.hub import SLOW_CLOSE_CODE, hub_get
from exchange.marketdata.publisher import market_group
from exchange.marketdata.state import book_state_store
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]


class CountingLayer(InMemoryChannelLayer):
    """Counts group joins and leaves and the messages each channel receives."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.added: list[tuple[str, str]] = []
        self.discarded: list[tuple[str, str]] = []
        self.received: dict[str, int] = {}

    async def group_add(self, group, channel):
        self.added.append((group, channel))
        await super().group_add(group, channel)

    async def group_discard(self, group, channel):
        self.discarded.append((group, channel))
        await super().group_discard(group, channel)

    async def receive(self, channel):
        message = await super().receive(channel)
        self.received[channel] = self.received.get(channel, 0) + 1
        return message

    def members(self, group):
        return set(self.groups.get(group, {}))


@pytest.fixture
def layer(settings, market):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "tests.marketdata.test_hub.CountingLayer", "CONFIG": {}}
    }
    channel_layers.backends.clear()
    book_state_store(market_id=market.id, state={"seq": 0, "bids": [], "asks": [], "checksum": 0})
    yield
    channel_layers.backends.clear()


def batch(seq: int, trade_id: int) -> dict:
    return {
        "type": "market.batch", "market": SYMBOL, "top": {}, "candles": {},
        "book": {"seq": seq, "bids": [[800, 1000 + seq]], "asks": [], "checksum": seq},
        "trades": [[trade_id, 800, 1000, "buy", 1_700_000_000_000 + trade_id]],
    }  # fmt: skip


async def subscribed(app=application, channels=("book", "trades")) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(app, "/ws/v1", headers=ORIGIN)
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"op": "subscribe", "channels": list(channels), "markets": [SYMBOL]})
    assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
    if "book" in channels:
        assert (await ws.receive_json_from(timeout=5))["type"] == "snapshot"
    return ws


def test_one_layer_message_reaches_every_local_connection_rendered_once(layer, market) -> None:
    async def scenario():
        clients = [await subscribed() for _ in range(3)]
        channel_layer = channel_layers["default"]
        hub = hub_get()
        # one member in the market's group: the hub, not one per connection
        assert channel_layer.members(market_group(market.id)) == {hub.channel}

        await channel_layer.group_send(market_group(market.id), batch(seq=1, trade_id=41))

        outputs = [
            [await ws.receive_output(timeout=5) for _ in range(2)] for ws in clients
        ]  # fmt: skip
        texts = [[output["text"] for output in client] for client in outputs]
        book, trades = (orjson.loads(text) for text in texts[0])
        assert (book["channel"], book["type"], book["seq"], book["bids"]) == (
            "book", "update", 1, [["8", "1.001"]],
        )  # fmt: skip
        assert trades == {
            "channel": "trades", "market": SYMBOL,
            "trades": [{"id": 41, "price": "8", "quantity": "1", "taker_side": "buy",
                        "time": "2023-11-14T22:13:20.041Z"}],
        }  # fmt: skip
        # the same string objects for every connection: rendered once, no per-connection JSON
        for client in texts[1:]:
            assert all(a is b for a, b in zip(client, texts[0], strict=True))
        assert channel_layer.received == {hub.channel: 1}
        for ws in clients:
            assert await ws.receive_nothing(timeout=0.1)
            await ws.disconnect()

    async_to_sync(scenario)()


def test_joins_the_group_at_the_first_subscriber_and_leaves_after_the_last(layer, market) -> None:
    async def scenario():
        channel_layer = channel_layers["default"]
        group = market_group(market.id)
        first = await subscribed()
        hub = hub_get()
        assert channel_layer.added == [(group, hub.channel)]
        second = await subscribed(channels=("trades",))
        assert channel_layer.added == [(group, hub.channel)]

        await first.send_json_to({"op": "unsubscribe", "channels": ["book", "trades"],
                                  "markets": [SYMBOL]})  # fmt: skip
        assert (await first.receive_json_from(timeout=5))["type"] == "unsubscribed"
        assert channel_layer.discarded == []
        await channel_layer.group_send(group, batch(seq=1, trade_id=7))
        assert (await second.receive_json_from(timeout=5))["channel"] == "trades"
        assert await first.receive_nothing(timeout=0.2)

        await second.disconnect()
        assert channel_layer.discarded == [(group, hub.channel)]
        assert channel_layer.members(group) == set()
        assert hub.feeds == {}
        assert hub.receiver is None

        # a new subscriber joins again
        third = await subscribed(channels=("trades",))
        assert channel_layer.added == [(group, hub.channel)] * 2
        await third.disconnect()
        await first.disconnect()

    async_to_sync(scenario)()


def test_stuck_connection_does_not_delay_the_others_and_is_closed(
    layer, market, monkeypatch
) -> None:
    monkeypatch.setattr(hub_module, "MAX_BACKLOG", 5)
    stuck = asyncio.Event()  # set: the client stops reading, its socket's sends never finish

    async def stuck_app(scope, receive, send):
        async def stuck_send(message):
            if message["type"] == "websocket.send" and stuck.is_set():
                await asyncio.get_running_loop().create_future()
            await send(message)

        await application(scope, receive, stuck_send)

    async def scenario():
        channel_layer = channel_layers["default"]
        fast = await subscribed()
        slow = await subscribed(app=stuck_app)
        hub = hub_get()
        assert len(hub.feeds[market.id].subscribers) == 2
        stuck.set()

        for seq in range(1, 11):
            await channel_layer.group_send(market_group(market.id), batch(seq, trade_id=seq))
            # the fast client gets each batch while the stuck one's frames pile up
            book = await fast.receive_json_from(timeout=5)
            assert (book["channel"], book["seq"]) == ("book", seq)
            assert (await fast.receive_json_from(timeout=5))["channel"] == "trades"

        # 20 frames were due: past the backlog limit the stuck client was closed and dropped
        assert await slow.receive_output(timeout=5) == {
            "type": "websocket.close", "code": SLOW_CLOSE_CODE,
            "reason": "slow consumer: send backlog over the limit",
        }  # fmt: skip
        assert len(hub.feeds[market.id].subscribers) == 1
        await fast.disconnect()
        await slow.disconnect()
        assert hub.feeds == {}

    async_to_sync(scenario)()


def test_one_hub_per_event_loop(layer, market) -> None:
    hubs = []

    async def scenario():
        hubs.append(hub_get())
        assert hub_get() is hubs[-1]
        ws = await subscribed(channels=("trades",))
        assert hubs[-1].channel in channel_layers["default"].members(market_group(market.id))
        await ws.disconnect()

    async_to_sync(scenario)()
    async_to_sync(scenario)()
    first, second = hubs
    assert first is not second
    assert first.channel != second.channel


def test_ticker_is_read_once_per_interval_for_all_connections(layer, market, settings) -> None:
    settings.WS_TICKER_INTERVAL = 0.3
    reads = []
    original = hub_module.ticker_get

    def counting_ticker_get(*, market):
        reads.append(market.id)
        return original(market=market)

    async def scenario():
        clients = [await subscribed(channels=("ticker",)) for _ in range(3)]
        for ws in clients:
            assert (await ws.receive_json_from(timeout=5))["channel"] == "ticker"
        channel_layer = channel_layers["default"]
        for seq in range(1, 6):
            await channel_layer.group_send(market_group(market.id), batch(seq, trade_id=seq))
        counts = []
        for ws in clients:
            tickers = 0
            while not await ws.receive_nothing(timeout=0.8):
                assert (await ws.receive_json_from())["channel"] == "ticker"
                tickers += 1
            counts.append(tickers)
            await ws.disconnect()
        return counts

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hub_module, "ticker_get", counting_ticker_get)
        counts = async_to_sync(scenario)()
    # five batches inside one interval: one or two tickers (the first at once, the last change
    # after the interval), each read once for the three connections
    assert counts[0] in (1, 2)
    assert counts == [counts[0]] * 3
    assert reads == [market.id] * counts[0]


def test_frames_skip_the_session_middleware_wrapper() -> None:
    from channels.sessions import InstanceSessionWrapper

    from exchange.marketdata.consumers import _frame_send

    async def server_send(message):
        return message

    outer = InstanceSessionWrapper({"cookies": {}}, server_send)
    inner_of_two = InstanceSessionWrapper({"cookies": {}}, outer.send)
    assert _frame_send(outer.send) is server_send
    assert _frame_send(inner_of_two.send) is server_send
    assert _frame_send(server_send) is server_send
