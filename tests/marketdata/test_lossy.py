"""Channels delivers group messages at most once: with 1% of them dropped, the reference client
detects every book gap by seq, resubscribes, and ends with the server's book."""

from __future__ import annotations

import random

import pytest
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client

from exchange.asgi import application
from exchange.engine import Book
from exchange.marketdata.book_feed import book_snapshot_build, book_update_build
from exchange.marketdata.checksum import book_checksum
from exchange.marketdata.publisher import market_group, user_group
from exchange.marketdata.state import book_state_store
from tests.marketdata.client import BookClient
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)

UPDATES = 10_000


class LossyLayer(InMemoryChannelLayer):
    """Drops 1% of group messages (seeded)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.random = random.Random(2026)
        self.dropped = 0
        self.last_dropped = False

    async def group_send(self, group, message):
        self.last_dropped = self.random.random() < 0.01
        if self.last_dropped:
            self.dropped += 1
            return
        await super().group_send(group, message)


@pytest.fixture
def lossy_layer(settings):
    # the test replays a day of gaps in seconds: no per-connection message limit here
    settings.WS_RATE_BURST = 1_000_000
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "tests.marketdata.test_lossy.LossyLayer",
            "CONFIG": {"capacity": 100_000},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def test_client_recovers_from_every_dropped_update(lossy_layer, market, make_user) -> None:
    user = make_user()
    # a logged-in browser: a real session, which the private channel re-checks
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()

    async def scenario():
        layer = channel_layers["default"]
        assert isinstance(layer, LossyLayer)
        book = Book()
        seq = 0
        book_state_store(market_id=market.id, state=book_snapshot_build(book, seq))
        ws = WebsocketCommunicator(
            application, "/ws/v1", headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)]
        )
        await ws.connect()
        await ws.send_json_to(
            {"op": "subscribe", "channels": ["book", "user"], "markets": [SYMBOL]}
        )
        assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
        client = BookClient("0.01", "0.001")
        assert client.on_message(await ws.receive_json_from(timeout=5)) == "ok"

        rng = random.Random(11)
        sent = delivered_book = delivered_user = resubscribes = dropped_book = 0
        runs_of_drops = 0
        previous_dropped = False
        next_id = 1
        while sent < UPDATES or layer.last_dropped:
            # one command on the server's book
            if rng.random() < 0.3 and len(book):
                book.cancel(rng.randrange(1, next_id))
            else:
                book.new(next_id, f"a{rng.randint(1, 9)}", rng.choice(["buy", "sell"]), "limit",
                         rng.randint(700, 900), rng.randint(1, 50))  # fmt: skip
                next_id += 1
            bids, asks = book.drain_changed()
            if not bids and not asks:
                continue
            seq += 1
            update = book_update_build(book, bids, asks, seq)
            book_state_store(market_id=market.id, state=book_snapshot_build(book, seq))
            message = {"type": "market.batch", "market": SYMBOL, "book": update, "trades": [],
                       "top": {}, "candles": {}}  # fmt: skip
            await layer.group_send(market_group(market.id), message)
            sent += 1
            if layer.last_dropped:
                dropped_book += 1
                previous_dropped = True
            else:
                runs_of_drops += previous_dropped
                previous_dropped = False
                delivered_book += 1
                received = await ws.receive_json_from(timeout=5)
                assert received["channel"] == "book"
                if client.on_message(received) == "gap":
                    resubscribes += 1
                    await ws.send_json_to(
                        {"op": "unsubscribe", "channels": ["book"], "markets": [SYMBOL]}
                    )
                    assert (await ws.receive_json_from(timeout=5))["type"] == "unsubscribed"
                    await ws.send_json_to(
                        {"op": "subscribe", "channels": ["book"], "markets": [SYMBOL]}
                    )
                    assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
                    snapshot = await ws.receive_json_from(timeout=5)
                    assert snapshot["type"] == "snapshot"
                    assert client.on_message(snapshot) == "ok"
            # an order update for the user channel (no seq: at most once, like any group send)
            await layer.group_send(
                user_group(user.id),
                {"type": "user.updates", "updates": [
                    {"kind": "order", "market": SYMBOL, "id": seq, "status": "open",
                     "filled_lots": 0, "cancel_reason": None}]},
            )  # fmt: skip
            if not layer.last_dropped:
                delivered_user += 1
                assert (await ws.receive_json_from(timeout=5))["channel"] == "user"
        await ws.disconnect()

        bids, asks = book.l2(1000)
        assert client.levels() == ([(p, q) for p, q, _ in bids], [(p, q) for p, q, _ in asks])
        assert client.checksum() == book_checksum(bids, asks)
        assert client.seq == seq
        assert dropped_book >= 50  # ~1% of 10,000
        # every run of dropped updates was noticed at the next delivered one, and repaired
        assert client.gaps == resubscribes == runs_of_drops > 0
        assert delivered_book + dropped_book == sent
        assert delivered_user > 9_000

    async_to_sync(scenario)()
