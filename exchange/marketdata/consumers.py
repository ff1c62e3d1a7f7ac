"""The public websocket ``/ws/v1``: market data channels and the private ``user`` channel.

Protocol (JSON text frames):
- ``{"op":"subscribe","channels":["ticker","trades","book","candles:1m"],"markets":["SYM"]}``
  → ``{"type":"subscribed",...}`` then, for ``book``, a snapshot; ``unsubscribe`` likewise.
  Unknown channels or markets → ``{"type":"error",...}``; nothing is subscribed.
- ``{"op":"auth","key":"tx_..."}`` or ``Authorization: Bearer tx_...`` on the handshake (an API
  key with ``read``; a bad header key refuses the handshake), or a logged-in browser session,
  then ``{"op":"subscribe","channels":["user"]}`` for my order updates and fills.
- Origin: a handshake with an ``Origin`` must come from an allowed host; one without (a bot) is
  accepted but never uses the session cookie (``exchange.routing.BrowserOriginValidator``).
- ``{"op":"ping"}`` → ``{"type":"pong"}``; the server sends ``{"type":"heartbeat"}`` every few
  seconds.
- ``book`` updates carry ``seq`` (+1 per update, no gaps) and ``checksum`` (see
  ``exchange.marketdata.checksum``): on a gap, resubscribe to get a fresh snapshot.
Channels delivers group messages at most once, which is why ``seq`` exists.

Public market channels reach a connection through the process's ``FeedHub`` (one channel-layer
subscription per process and market, frames rendered once); the private ``user`` channel is a
per-connection group. Every outgoing frame goes through the connection's ``Outbox``: a client that
falls more than ``hub.MAX_BACKLOG`` frames behind is closed with code 1008.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings
from django.utils import timezone

from exchange.marketdata import hub
from exchange.marketdata.hub import (
    SLOW_CLOSE_CODE,
    SLOW_CLOSE_REASON,
    Outbox,
    RenderedBatch,
    channel_receive_forever,
    hub_get,
    levels_public,
)
from exchange.marketdata.models import INTERVALS
from exchange.marketdata.publisher import user_group
from exchange.marketdata.selectors import book_state_get, book_time, candle_latest, ticker_get
from exchange.markets.models import Market
from exchange.outages import dependency_outage
from exchange.times import ms_text, time_text
from orders.units import lots_to_quantity, ticks_to_price

logger = logging.getLogger(__name__)

MARKET_CHANNELS = {"ticker", "trades", "book", *(f"candles:{name}" for name in INTERVALS)}
MAX_MESSAGE_BYTES = 4096


@database_sync_to_async
def _markets_load() -> dict[str, Market]:
    return {market.symbol: market for market in Market.objects.all()}


@database_sync_to_async
def _key_user(key: str) -> tuple[Any, str | None, int | None]:
    """(user, problem, key id): the key's user, or None and why."""
    from accounts.services import api_key_authenticate

    api_key = api_key_authenticate(key=key)
    if api_key is None:
        return None, "Invalid, expired or revoked API key.", None
    if "read" not in api_key.scopes:
        return None, "This API key lacks the 'read' scope.", None
    return api_key.user, None, api_key.id


# The close code of a connection whose key was revoked or whose session ended (4000-4999 are
# the application's; 4401 reads as HTTP's 401).
CREDENTIALS_ENDED_CODE = 4401
# RFC 6455's "Try Again Later": the channel layer or the database is unreachable.
UNAVAILABLE_CLOSE_CODE = 1013


@database_sync_to_async
def _credential_valid(user_id: int, key_id: int | None, session_key: str | None) -> bool:
    """Whether the connection's credential still holds, from the database (never a cache: the
    HTTP paths cache keys for ``API_KEY_CACHE_SECONDS``, this is the check that ends access)."""
    from importlib import import_module
    from types import SimpleNamespace

    from django.contrib.auth import get_user

    from accounts.models import ApiKey

    if key_id is not None:
        api_key = ApiKey.objects.select_related("user").filter(id=key_id).first()
        return (
            api_key is not None
            and api_key.is_usable()
            and api_key.user.is_active
            and "read" in api_key.scopes
        )
    if session_key is not None:
        # as a request would: a flushed session, another user or a changed password all fail
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
        return user.is_authenticated and user.pk == user_id
    return False


def _bearer_key(scope: dict[str, Any]) -> str | None:
    """The API key of an ``Authorization: Bearer`` handshake header, if any."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return key.strip()
    return None


def _frame_send(send: Callable[[dict[str, Any]], Awaitable[None]]) -> Any:
    """The server's own send, for text frames.

    channels' SessionMiddleware wraps send to save the session on HTTP responses; for every
    websocket frame it still reads the lazy session twice, about 15% of the server's CPU in a
    1,000-client fan-out. Frames need none of it; accept and close still go through it.
    """
    while isinstance(getattr(send, "__self__", None), InstanceSessionWrapper):
        send = send.__self__.real_send
    return send


def _update_time(update: dict[str, Any]) -> str | None:
    """The batch's time (a runner from before times were sent gives none)."""
    moment = update.get("time")
    return ms_text(moment) if moment is not None else None


class FeedConsumer(AsyncJsonWebsocketConsumer):
    # No per-connection channel-layer channel by default: public channels come from the hub, and
    # only a connection that subscribes to ``user`` gets a channel of its own (``_user_join``).
    channel_layer_alias = "feed-connections-have-no-channel"

    async def connect(self) -> None:
        self.markets: dict[str, Market] = await _markets_load()
        self.by_id = {market.id: market for market in self.markets.values()}
        self.subscriptions: dict[int, set[str]] = {}
        self.book_seq: dict[int, int] = {}
        self.user = self.scope.get("user")
        if self.user is not None and not self.user.is_authenticated:
            self.user = None
        # the credential behind self.user, re-checked while the private channel is open
        self.key_id: int | None = None
        session = self.scope.get("session")
        self.session_key: str | None = session.session_key if self.user and session else None
        self.credential_checked = time.monotonic()
        key = _bearer_key(self.scope)
        if key is not None:
            key_user, _problem, key_id = await _key_user(key)
            if key_user is None:
                await self.close()  # before accept: the handshake is answered 403
                return
            self.user, self.key_id, self.session_key = key_user, key_id, None
        self.user_subscribed = False
        self.user_joined = 0.0
        self.layer = get_channel_layer()
        self.user_channel: str | None = None
        self.user_receiver: asyncio.Task[None] | None = None
        self.tokens = float(settings.WS_RATE_BURST)
        self.refilled = time.monotonic()
        self.hub = hub_get()
        self.closing: asyncio.Task[None] | None = None
        await self.accept()
        self.outbox = Outbox(_frame_send(self.base_send), self._too_slow)
        self.heartbeat = asyncio.ensure_future(self._heartbeat())

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "heartbeat"):
            self.heartbeat.cancel()
        if hasattr(self, "outbox"):
            self.outbox.stop()
        for market_id in list(getattr(self, "subscriptions", {})):
            await self.hub.unsubscribe(market_id, self)
        self.subscriptions = {}
        if getattr(self, "user_receiver", None) is not None:
            self.user_receiver.cancel()
        if getattr(self, "user_subscribed", False):
            await self._user_leave()

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Queue a text frame behind the ones already queued; never waits for the socket."""
        if text_data is None:
            raise ValueError("The feed sends text frames only.")
        self.outbox.push(text_data)

    def _too_slow(self) -> None:
        """The outbox overflowed: stop feeding this connection and close it."""
        self.heartbeat.cancel()
        for market_id in self.subscriptions:
            self.hub.discard(market_id, self)
            self.hub.leave_later(market_id)
        self.subscriptions = {}
        self.closing = asyncio.ensure_future(self._close_slow())

    async def _close_slow(self) -> None:
        try:
            await self.base_send(
                {"type": "websocket.close", "code": SLOW_CLOSE_CODE, "reason": SLOW_CLOSE_REASON}
            )
        except Exception:  # already gone
            return

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return orjson.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return orjson.dumps(content).decode()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(settings.WS_HEARTBEAT_SECONDS)
            await self.send_json({"type": "heartbeat", "time": time_text(timezone.now())})
            # the backstop of the push in ``_user_message``: a revocation or logout whose
            # message was lost (channel layer down) still ends the private channel
            recheck = time.monotonic() - self.credential_checked
            if (
                self.user_subscribed
                and recheck >= settings.WS_CREDENTIAL_RECHECK_SECONDS
                and not await self._credential_still_valid()
            ):
                await self._credentials_ended()
                return
            # channels-redis forgets group members after a day: renew the private subscription
            if (
                self.user_subscribed
                and time.monotonic() - self.user_joined > hub.GROUP_RENEW_SECONDS
            ):
                await self._user_join()

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
        try:
            await self._dispatch(content)
        except Exception as error:
            if not dependency_outage(error):
                raise
            await self._unavailable(error, content.get("id"))

    async def _unavailable(self, error: Exception, request_id: Any) -> None:
        """The channel layer (Redis) or the database cannot be reached: say so, then close with
        1013 "try again later" — the client reconnects with backoff and resubscribes, and the
        page shows its feed offline meanwhile. Never a 1011."""
        logger.warning(
            "websocket refused: dependency unavailable: %s: %s", type(error).__name__, error
        )
        self.heartbeat.cancel()
        self.outbox.stop()
        frame = {
            "type": "error",
            "code": "service_unavailable",
            "message": "Live data is unavailable right now; reconnect in a few seconds.",
            "id": request_id,
        }
        try:
            await self.base_send({"type": "websocket.send", "text": await self.encode_json(frame)})
            await self.base_send(
                {"type": "websocket.close", "code": UNAVAILABLE_CLOSE_CODE,
                 "reason": "service unavailable"}
            )  # fmt: skip
        except Exception:  # already gone
            return

    async def _dispatch(self, content: dict[str, Any]) -> None:
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
        if not all(isinstance(item, str) for item in (*channels, *symbols)):
            # a dict or list inside would not even hash (it closed the connection with 1011)
            return [], [], "channels and markets must be lists of strings."
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
                self.subscriptions[market.id] = set()
                await self.hub.subscribe(market, self)
            self.subscriptions[market.id].update(market_channels)
        if "user" in channels and not self.user_subscribed:
            if not await self._credential_still_valid():
                await self._credentials_ended()
                return
            await self._user_join()
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
                await self.hub.unsubscribe(market.id, self)
        if "user" in channels and self.user_subscribed:
            await self._user_leave()
        await self.send_json(
            {"type": "unsubscribed", "id": request_id, "channels": channels,
             "markets": [m.symbol for m in markets]}
        )  # fmt: skip

    async def authenticate(self, content: dict[str, Any], request_id: Any) -> None:
        key = content.get("key")
        if not isinstance(key, str):
            await self.error("invalid", "auth needs a key.", id=request_id)
            return
        user, problem, key_id = await _key_user(key)
        if user is None:
            await self.error("authentication_failed", problem or "refused", id=request_id)
            return
        if self.user_subscribed and self.user is not None and self.user.id != user.id:
            await self._user_leave()
        self.user, self.key_id, self.session_key = user, key_id, None
        self.credential_checked = time.monotonic()
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
                "time": book_time(state),
            }
        )

    async def send_ticker(self, market: Market) -> None:
        ticker = await database_sync_to_async(ticker_get)(market=market)
        await self.send_json({"channel": "ticker", **ticker})

    async def send_open_candle(self, market: Market, interval: str) -> None:
        candle = await database_sync_to_async(candle_latest)(market=market, interval=interval)
        if candle:
            await self.send_json(
                {"channel": f"candles:{interval}", "market": market.symbol, "candle": candle}
            )

    # -- the public feed, from the hub (synchronous: queue frames, never wait) -----------------
    def wants(self, market_id: int, channel: str) -> bool:
        return channel in self.subscriptions.get(market_id, ())

    def feed_batch(self, market_id: int, batch: RenderedBatch) -> None:
        channels = self.subscriptions.get(market_id)
        if not channels:
            return
        push = self.outbox.push
        if batch.book is not None and "book" in channels:
            known = self.book_seq.get(market_id)
            if known is not None and batch.book_seq > known:
                # forward as is: a gap (seq > known + 1) is the client's cue to resubscribe
                self.book_seq[market_id] = batch.book_seq
                push(batch.book)
        if batch.trades is not None and "trades" in channels:
            push(batch.trades)
        for channel, frame in batch.candles.items():
            if channel in channels:
                push(frame)

    def feed_unavailable(self) -> None:
        """The hub's channel layer stopped delivering: close as an outage does (1013)."""
        if self.closing is None:
            error = ConnectionError("the channel layer is not delivering")
            self.closing = asyncio.ensure_future(self._unavailable(error, None))

    def feed_ticker(self, market_id: int, frame: str) -> None:
        self.outbox.push(frame)

    # -- group messages (the private user channel) --------------------------------------------
    async def _user_join(self) -> None:
        if self.user_channel is None:
            self.user_channel = await self.layer.new_channel()
            self.user_receiver = asyncio.ensure_future(
                channel_receive_forever(self.layer, self.user_channel, self._user_message)
            )
        await self.layer.group_add(user_group(self.user.id), self.user_channel)
        self.user_subscribed = True
        self.user_joined = time.monotonic()

    async def _user_leave(self) -> None:
        self.user_subscribed = False
        await self.layer.group_discard(user_group(self.user.id), self.user_channel)

    async def _user_message(self, event: dict[str, Any]) -> None:
        if event.get("type") == "user.updates" and self.user_subscribed:
            await self.user_updates(event)
        elif event.get("type") == "user.credentials_ended" and self.user_subscribed:
            # sent by accounts.services.credentials_ended on key revocation and logout
            ended = (self.key_id is not None and self.key_id in event.get("api_key_ids", ())) or (
                self.session_key is not None and self.session_key == event.get("session_key")
            )
            if ended:
                await self._credentials_ended()

    async def _credential_still_valid(self) -> bool:
        self.credential_checked = time.monotonic()
        if self.user is None:
            return False
        return await _credential_valid(self.user.id, self.key_id, self.session_key)

    async def _credentials_ended(self) -> None:
        """The key was revoked or the session ended: nothing private is sent any more, and the
        connection is closed with 4401 (the client reconnects with a valid credential)."""
        if self.user_subscribed:
            await self._user_leave()
        self.user = None
        if self.heartbeat is not asyncio.current_task():
            self.heartbeat.cancel()
        self.outbox.stop()
        try:
            await self.base_send(
                {"type": "websocket.close", "code": CREDENTIALS_ENDED_CODE,
                 "reason": "credentials revoked or expired"}
            )  # fmt: skip
        except Exception:  # already gone
            return

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
                     "cancel_reason": update["cancel_reason"], "time": _update_time(update)}
                )  # fmt: skip
            else:
                updates.append(
                    {"kind": "fill", "market": market.symbol, "trade_id": update["trade_id"],
                     "side": update["side"], "price": ticks_to_price(market, update["price_ticks"]),
                     "quantity": lots_to_quantity(market, update["quantity_lots"]),
                     "liquidity": update["liquidity"], "time": _update_time(update)}
                )  # fmt: skip
        if updates:
            await self.send_json({"channel": "user", "updates": updates})
