"""The public websocket ``/ws/v1``: market data channels and the private ``user`` channel.

Protocol (JSON text frames):
- ``{"op":"subscribe","channels":["ticker","trades","book","candles:1m"],"markets":["SYM"]}``
  → ``{"type":"subscribed",...}`` then, for ``book``, a snapshot; ``unsubscribe`` likewise.
  Unknown channels or markets → ``{"type":"error",...}``; nothing is subscribed.
- ``{"op":"auth","key":"tx_..."}`` (an API key with ``read``) or a logged-in browser session,
  then ``{"op":"subscribe","channels":["user"]}`` for my order updates and fills.
- ``{"op":"ping"}`` → ``{"type":"pong"}``; the server sends ``{"type":"heartbeat"}`` every few
  seconds.
- ``book`` updates carry ``seq`` (+1 per update, no gaps) and ``checksum`` (see
  ``exchange.marketdata.checksum``): on a gap, resubscribe to get a fresh snapshot.
Channels delivers group messages at most once, which is why ``seq`` exists.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from exchange.marketdata.models import INTERVALS
from exchange.marketdata.publisher import market_group, user_group
from exchange.marketdata.selectors import (
    book_state_get,
    candle_public,
    candles_list,
    ticker_get,
    trade_public,
)
from exchange.markets.models import Market
from orders.units import lots_to_quantity, ticks_to_price


def levels_public(market: Market, levels: list[list[int]]) -> list[list[str | None]]:
    """Book levels ([ticks, lots, ...]) as public [price, quantity] decimal strings."""
    return [
        [ticks_to_price(market, level[0]), lots_to_quantity(market, level[1])] for level in levels
    ]


class RenderCache:
    """Frames rendered once per process and shared by every connection that sends them.

    A batch's book update or trades frame is the same text for every subscriber; rendering it
    per connection would make fan-out cost O(clients × formatting).
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.frames: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    def get(self, key: tuple[Any, ...], render: Callable[[], dict[str, Any]]) -> str:
        frame = self.frames.get(key)
        if frame is None:
            frame = orjson.dumps(render()).decode()
            self.frames[key] = frame
            if len(self.frames) > self.size:
                self.frames.popitem(last=False)
        return frame


FRAMES = RenderCache()
MARKET_CHANNELS = {"ticker", "trades", "book", *(f"candles:{name}" for name in INTERVALS)}
MAX_MESSAGE_BYTES = 4096


@database_sync_to_async
def _markets_load() -> dict[str, Market]:
    return {market.symbol: market for market in Market.objects.all()}


@database_sync_to_async
def _key_user(key: str) -> tuple[Any, str | None]:
    from accounts.services import api_key_authenticate

    api_key = api_key_authenticate(key=key)
    if api_key is None:
        return None, "Invalid, expired or revoked API key."
    if "read" not in api_key.scopes:
        return None, "This API key lacks the 'read' scope."
    return api_key.user, None


class FeedConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.markets: dict[str, Market] = await _markets_load()
        self.by_id = {market.id: market for market in self.markets.values()}
        self.subscriptions: dict[int, set[str]] = {}
        self.book_seq: dict[int, int] = {}
        self.user = self.scope.get("user")
        if self.user is not None and not self.user.is_authenticated:
            self.user = None
        self.user_subscribed = False
        self.tokens = float(settings.WS_RATE_BURST)
        self.refilled = time.monotonic()
        self.ticker_sent: dict[int, float] = {}
        self.ticker_pending: set[int] = set()
        self.tasks: set[asyncio.Future[None]] = set()
        await self.accept()
        self.heartbeat = asyncio.ensure_future(self._heartbeat())

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "heartbeat"):
            self.heartbeat.cancel()
        for task in list(getattr(self, "tasks", ())):
            task.cancel()
        for market_id in list(getattr(self, "subscriptions", {})):
            await self.channel_layer.group_discard(market_group(market_id), self.channel_name)
        if getattr(self, "user_subscribed", False):
            await self.channel_layer.group_discard(user_group(self.user.id), self.channel_name)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return orjson.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return orjson.dumps(content).decode()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(settings.WS_HEARTBEAT_SECONDS)
            await self.send_json({"type": "heartbeat", "time": int(time.time() * 1000)})

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})

    # -- client messages --------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        now = time.monotonic()
        self.tokens = min(
            float(settings.WS_RATE_BURST),
            self.tokens + (now - self.refilled) * settings.WS_RATE_PER_SECOND,
        )
        self.refilled = now
        if self.tokens < 1:
            await self.error("rate_limited", "Too many messages; slow down.")
            return
        self.tokens -= 1
        if text_data is None:
            await self.error("invalid", "Send JSON text frames.")
            return
        if len(text_data) > MAX_MESSAGE_BYTES:
            await self.error("too_large", f"Messages are limited to {MAX_MESSAGE_BYTES} bytes.")
            return
        try:
            content = await self.decode_json(text_data)
        except orjson.JSONDecodeError:
            await self.error("bad_json", "Not valid JSON.")
            return
        if not isinstance(content, dict):
            await self.error("invalid", "Send a JSON object with an op.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        op = content.get("op")
        request_id = content.get("id")
        if op == "ping":
            await self.send_json({"type": "pong", "id": request_id})
        elif op == "subscribe":
            await self.subscribe(content, request_id)
        elif op == "unsubscribe":
            await self.unsubscribe(content, request_id)
        elif op == "auth":
            await self.authenticate(content, request_id)
        else:
            await self.error("unknown_op", "op must be subscribe, unsubscribe, auth or ping.")

    def _parse(self, content: dict[str, Any]) -> tuple[list[str], list[Market], str | None]:
        channels = content.get("channels")
        symbols = content.get("markets", [])
        if not isinstance(channels, list) or not channels or not isinstance(symbols, list):
            return [], [], "channels must be a non-empty list and markets a list."
        unknown_channels = [c for c in channels if c not in MARKET_CHANNELS and c != "user"]
        if unknown_channels:
            return [], [], f"Unknown channel(s): {', '.join(map(str, unknown_channels))}."
        unknown_markets = [s for s in symbols if s not in self.markets]
        if unknown_markets:
            return [], [], f"Unknown market(s): {', '.join(map(str, unknown_markets))}."
        market_channels = [c for c in channels if c != "user"]
        if market_channels and not symbols:
            return [], [], "Name the markets for market channels."
        return channels, [self.markets[s] for s in symbols], None

    async def subscribe(self, content: dict[str, Any], request_id: Any) -> None:
        channels, markets, problem = self._parse(content)
        if problem:
            await self.error("invalid_subscription", problem, id=request_id)
            return
        if "user" in channels and self.user is None:
            await self.error(
                "not_authenticated", "The user channel needs a session or an auth op first.",
                id=request_id,
            )  # fmt: skip
            return
        market_channels = [c for c in channels if c != "user"]
        for market in markets:
            if market.id not in self.subscriptions:
                await self.channel_layer.group_add(market_group(market.id), self.channel_name)
                self.subscriptions[market.id] = set()
            self.subscriptions[market.id].update(market_channels)
        if "user" in channels and not self.user_subscribed:
            await self.channel_layer.group_add(user_group(self.user.id), self.channel_name)
            self.user_subscribed = True
        await self.send_json(
            {"type": "subscribed", "id": request_id, "channels": channels,
             "markets": [m.symbol for m in markets]}
        )  # fmt: skip
        for market in markets:
            if "book" in market_channels:
                await self.send_book_snapshot(market)
            if "ticker" in market_channels:
                await self.send_ticker(market)
            for channel in market_channels:
                if channel.startswith("candles:"):
                    interval = channel.split(":", 1)[1]
                    await self.send_open_candle(market, interval)

    async def unsubscribe(self, content: dict[str, Any], request_id: Any) -> None:
        channels, markets, problem = self._parse(content)
        if problem:
            await self.error("invalid_subscription", problem, id=request_id)
            return
        for market in markets:
            current = self.subscriptions.get(market.id)
            if current is None:
                continue
            current.difference_update(channels)
            if "book" in channels:
                self.book_seq.pop(market.id, None)
            if not current:
                del self.subscriptions[market.id]
                await self.channel_layer.group_discard(market_group(market.id), self.channel_name)
        if "user" in channels and self.user_subscribed:
            await self.channel_layer.group_discard(user_group(self.user.id), self.channel_name)
            self.user_subscribed = False
        await self.send_json(
            {"type": "unsubscribed", "id": request_id, "channels": channels,
             "markets": [m.symbol for m in markets]}
        )  # fmt: skip

    async def authenticate(self, content: dict[str, Any], request_id: Any) -> None:
        key = content.get("key")
        if not isinstance(key, str):
            await self.error("invalid", "auth needs a key.", id=request_id)
            return
        user, problem = await _key_user(key)
        if user is None:
            await self.error("authentication_failed", problem or "refused", id=request_id)
            return
        if self.user_subscribed and self.user is not None and self.user.id != user.id:
            await self.channel_layer.group_discard(user_group(self.user.id), self.channel_name)
            self.user_subscribed = False
        self.user = user
        await self.send_json({"type": "authenticated", "id": request_id})

    # -- snapshots ---------------------------------------------------------------------------
    async def send_book_snapshot(self, market: Market) -> None:
        state = await database_sync_to_async(book_state_get)(market=market)
        self.book_seq[market.id] = state["seq"]
        await self.send_json(
            {
                "channel": "book",
                "type": "snapshot",
                "market": market.symbol,
                "seq": state["seq"],
                "bids": levels_public(market, state["bids"]),
                "asks": levels_public(market, state["asks"]),
                "checksum": state["checksum"],
            }
        )

    async def send_ticker(self, market: Market) -> None:
        ticker = await database_sync_to_async(ticker_get)(market=market)
        self.ticker_sent[market.id] = time.monotonic()
        await self.send_json({"channel": "ticker", **ticker})

    async def send_open_candle(self, market: Market, interval: str) -> None:
        candles = await database_sync_to_async(candles_list)(
            market=market, interval=interval, start=None, end=None, limit=1
        )
        if candles:
            await self.send_json(
                {"channel": f"candles:{interval}", "market": market.symbol, "candle": candles[0]}
            )

    # -- group messages ----------------------------------------------------------------------
    async def market_batch(self, event: dict[str, Any]) -> None:
        market = self.markets.get(event["market"])
        channels = self.subscriptions.get(market.id) if market else None
        if not channels:
            return
        book = event.get("book")
        if book and "book" in channels:
            known = self.book_seq.get(market.id)
            if known is not None and book["seq"] > known:
                # forward as is: a gap (seq > known + 1) is the client's cue to resubscribe
                self.book_seq[market.id] = book["seq"]
                frame = FRAMES.get(
                    ("book", market.id, book["seq"]), lambda: self._book_frame(market, book)
                )
                await self.send(text_data=frame)
        trades = event["trades"]
        if trades and "trades" in channels:
            frame = FRAMES.get(
                ("trades", market.id, trades[0][0]),
                lambda: {
                    "channel": "trades",
                    "market": market.symbol,
                    "trades": [trade_public(market, *trade) for trade in trades],
                },
            )
            await self.send(text_data=frame)
        if "ticker" in channels and (event["trades"] or book):
            await self.ticker_changed(market)
        for interval, values in event.get("candles", {}).items():
            if f"candles:{interval}" in channels:
                await self.send_json(
                    {"channel": f"candles:{interval}", "market": market.symbol,
                     "candle": candle_public(market, values)}
                )  # fmt: skip

    @staticmethod
    def _book_frame(market: Market, book: dict[str, Any]) -> dict[str, Any]:
        return {
            "channel": "book",
            "type": "update",
            "market": market.symbol,
            "seq": book["seq"],
            "bids": levels_public(market, book["bids"]),
            "asks": levels_public(market, book["asks"]),
            "checksum": book["checksum"],
        }

    async def ticker_changed(self, market: Market) -> None:
        """Coalesce: at most one ticker per market per WS_TICKER_INTERVAL seconds."""
        wait = settings.WS_TICKER_INTERVAL - (time.monotonic() - self.ticker_sent.get(market.id, 0))
        if wait <= 0:
            await self.send_ticker(market)
        elif market.id not in self.ticker_pending:
            self.ticker_pending.add(market.id)

            async def later() -> None:
                await asyncio.sleep(wait)
                self.ticker_pending.discard(market.id)
                if market.id in self.subscriptions:
                    await self.send_ticker(market)

            task = asyncio.ensure_future(later())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def user_updates(self, event: dict[str, Any]) -> None:
        updates = []
        for update in event["updates"]:
            market = self.markets.get(update["market"])
            if market is None:
                continue
            if update["kind"] == "order":
                updates.append(
                    {"kind": "order", "market": market.symbol, "id": update["id"],
                     "status": update["status"],
                     "filled_quantity": lots_to_quantity(market, update["filled_lots"]),
                     "cancel_reason": update["cancel_reason"]}
                )  # fmt: skip
            else:
                updates.append(
                    {"kind": "fill", "market": market.symbol, "trade_id": update["trade_id"],
                     "side": update["side"], "price": ticks_to_price(market, update["price_ticks"]),
                     "quantity": lots_to_quantity(market, update["quantity_lots"]),
                     "liquidity": update["liquidity"]}
                )  # fmt: skip
        if updates:
            await self.send_json({"channel": "user", "updates": updates})
