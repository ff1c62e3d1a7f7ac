"""Process-local fan-out of the public market feed.

Without it every websocket connection joins ``market.<id>`` itself, so the channel layer stores,
ships and decodes one copy of each ``market.batch`` per subscriber (1,000 Redis list pushes and
1,000 receives per batch for 1,000 clients). Here one channel-layer channel per process and event
loop (the ``FeedHub``) joins a market's group when the first local connection subscribes to the
market and leaves it when the last one goes; its receive loop renders each frame once as text
and hands the same string to every local subscriber.

Nothing here awaits a connection's socket: each connection (``Outbox``) queues frames and writes
them from its own task, so a slow client delays only itself. A connection whose queue passes
``MAX_BACKLOG`` frames (its socket's write buffer is already full by then) is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from exchange.marketdata.publisher import market_group
from exchange.marketdata.selectors import book_time, candle_public, ticker_get, trade_public
from exchange.markets.models import Market
from exchange.metrics import FEED_LAG_SECONDS
from exchange.outages import OutageLog, dependency_outage
from orders.units import lots_to_quantity, ticks_to_price

logger = logging.getLogger(__name__)

# Frames a connection may have queued behind its socket before it is closed as a slow consumer.
# The transport buffers ~64 KiB before a send waits, so this is on top of that; at 20 batches/s
# with book and trades (40 frames/s) it is about six seconds of backlog.
MAX_BACKLOG = 256
SLOW_CLOSE_CODE = 1008
SLOW_CLOSE_REASON = "slow consumer: send backlog over the limit"
# channels-redis forgets group members after its group_expiry (a day by default): a hub lives as
# long as its process, so it renews its memberships well before that.
GROUP_RENEW_SECONDS = 3600.0
RECEIVE_RETRY_SECONDS = 1.0
_receive_outage = OutageLog("channel layer (receiving)", logger)


async def channel_receive_forever(
    layer: Any,
    channel: str,
    handle: Callable[[dict[str, Any]], Awaitable[None] | None],
    on_reachable: Callable[[bool], None] | None = None,
) -> None:
    """Receive a channel's messages until cancelled, through channel-layer errors.

    channels-redis blocks in BZPOPMIN for 5 s on an idle channel, and redis-py's default socket
    timeout is also 5 s: an idle receive often ends in a redis TimeoutError. Retry at once then;
    on any other error (Redis down) wait a little. Messages sent meanwhile wait in Redis, or are
    lost and show up as a book seq gap.
    """
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except RedisTimeoutError:
            continue
        except Exception as error:
            if dependency_outage(error):  # Redis down: one line per outage, not one a second
                _receive_outage.failed(error)
                if on_reachable is not None:
                    on_reachable(False)
            else:
                logger.exception("channel layer receive on %s failed", channel)
            await asyncio.sleep(RECEIVE_RETRY_SECONDS)
            continue
        _receive_outage.succeeded()
        if on_reachable is not None:
            on_reachable(True)
        try:
            result = handle(message)
            if result is not None:
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("handling a message of %s failed", channel)


def dumps(content: Any) -> str:
    return orjson.dumps(content).decode()


def levels_public(market: Market, levels: list[list[int]]) -> list[list[str | None]]:
    """Book levels ([ticks, lots, ...]) as public [price, quantity] decimal strings."""
    return [
        [ticks_to_price(market, level[0]), lots_to_quantity(market, level[1])] for level in levels
    ]


@dataclass(frozen=True, slots=True)
class RenderedBatch:
    """One ``market.batch`` event as the text frames every subscriber gets."""

    book_seq: int | None
    book: str | None
    trades: str | None
    candles: dict[str, str]  # channel name ("candles:1m") → frame


def batch_render(market: Market, event: dict[str, Any]) -> RenderedBatch:
    book = event.get("book")
    trades = event.get("trades")
    book_frame = trades_frame = None
    if book:
        book_frame = dumps(
            {"channel": "book", "type": "update", "market": market.symbol, "seq": book["seq"],
             "bids": levels_public(market, book["bids"]),
             "asks": levels_public(market, book["asks"]), "checksum": book["checksum"],
             "time": book_time(book)}
        )  # fmt: skip
    if trades:
        trades_frame = dumps(
            {"channel": "trades", "market": market.symbol,
             "trades": [trade_public(market, *trade) for trade in trades]}
        )  # fmt: skip
    candles = {}
    for interval, values in (event.get("candles") or {}).items():
        candles[f"candles:{interval}"] = dumps(
            {"channel": f"candles:{interval}", "market": market.symbol,
             "candle": candle_public(market, values)}
        )  # fmt: skip
    return RenderedBatch(
        book_seq=book["seq"] if book else None, book=book_frame, trades=trades_frame,
        candles=candles,
    )  # fmt: skip


class Outbox:
    """A connection's bounded queue of outgoing text frames, written by one task of its own.

    ``push`` never waits: it appends and wakes the writer. Every frame of the connection goes
    through here, so replies, snapshots and feed updates keep their order.
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        on_overflow: Callable[[], None],
        limit: int | None = None,
    ) -> None:
        self.send = send
        self.on_overflow = on_overflow
        self.limit = MAX_BACKLOG if limit is None else limit
        self.frames: deque[str] = deque()
        self.wakeup: asyncio.Future[None] | None = None
        self.open = True
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def push(self, frame: str) -> None:
        if not self.open:
            return
        self.frames.append(frame)
        if len(self.frames) > self.limit:
            self.overflowed()
            return
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def overflowed(self) -> None:
        self.stop()
        self.on_overflow()

    def stop(self) -> None:
        self.open = False
        self.frames.clear()
        self.writer.cancel()

    async def _write(self) -> None:
        frames = self.frames
        loop = asyncio.get_running_loop()
        try:
            while True:
                while frames:
                    await self.send({"type": "websocket.send", "text": frames.popleft()})
                self.wakeup = loop.create_future()
                await self.wakeup
        except asyncio.CancelledError:
            raise
        except Exception:  # the client went away mid-send; its disconnect cleans up
            self.open = False
            self.frames.clear()


class Subscriber(Protocol):
    """What the hub needs of a connection (``FeedConsumer``)."""

    def feed_batch(self, market_id: int, batch: RenderedBatch) -> None: ...

    def feed_unavailable(self) -> None: ...

    def feed_ticker(self, market_id: int, frame: str) -> None: ...

    def wants(self, market_id: int, channel: str) -> bool: ...


@dataclass(eq=False)
class MarketFeed:
    market: Market
    subscribers: set[Subscriber] = field(default_factory=set)
    joined: bool = False
    ticker_sent: float = 0.0
    ticker_pending: bool = False


class FeedHub:
    """One per process, channel layer and event loop: see the module docstring."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.feeds: dict[int, MarketFeed] = {}
        self.by_symbol: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self.receiver: asyncio.Task[None] | None = None
        self.renewer: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.receiving_down = False  # the last receive failed: Redis unreachable

    # -- membership --------------------------------------------------------------------------
    async def subscribe(self, market: Market, subscriber: Subscriber) -> None:
        if self.receiving_down:
            raise RedisConnectionError("the channel layer is not delivering (Redis unreachable)")
        feed = self.feeds.get(market.id)
        if feed is None:
            feed = self.feeds[market.id] = MarketFeed(market=market)
            self.by_symbol[market.symbol] = market.id
        feed.subscribers.add(subscriber)
        if not feed.joined:
            await self._sync(market.id)

    async def unsubscribe(self, market_id: int, subscriber: Subscriber) -> None:
        self.discard(market_id, subscriber)
        await self._sync(market_id)

    def discard(self, market_id: int, subscriber: Subscriber) -> None:
        """Forget a subscriber now; the group is left by a later ``unsubscribe`` or ``_sync``."""
        feed = self.feeds.get(market_id)
        if feed is not None:
            feed.subscribers.discard(subscriber)

    def leave_later(self, market_id: int) -> None:
        self._spawn(self._sync(market_id))

    async def _sync(self, market_id: int) -> None:
        """Join or leave the market's group so that membership matches having subscribers."""
        async with self.lock:
            feed = self.feeds.get(market_id)
            if feed is None:
                return
            if feed.subscribers and not feed.joined:
                if self.channel is None:
                    self.channel = await self.layer.new_channel()
                await self.layer.group_add(market_group(market_id), self.channel)
                feed.joined = True
                self._start()
            elif not feed.subscribers:
                if feed.joined:
                    try:
                        await self.layer.group_discard(market_group(market_id), self.channel)
                    except Exception as error:  # Redis down: the membership expires by itself
                        if not dependency_outage(error):
                            raise
                if not feed.subscribers:  # nobody came back while we waited
                    del self.feeds[market_id]
                    self.by_symbol.pop(feed.market.symbol, None)
                else:
                    feed.joined = False
                    await self.layer.group_add(market_group(market_id), self.channel)
                    feed.joined = True
                if not self.feeds:
                    self._stop()

    def _start(self) -> None:
        if self.receiver is None:
            self.receiver = asyncio.get_running_loop().create_task(self._receive())
            self.renewer = asyncio.get_running_loop().create_task(self._renew())

    def _stop(self) -> None:
        for task in (self.receiver, self.renewer):
            if task is not None:
                task.cancel()
        self.receiver = self.renewer = None
        # nothing receives now: the next subscription finds out by joining (group_add)
        self.receiving_down = False

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(GROUP_RENEW_SECONDS)
            for market_id, feed in list(self.feeds.items()):
                if feed.joined:
                    with contextlib.suppress(Exception):
                        await self.layer.group_add(market_group(market_id), self.channel)

    # -- fan-out -----------------------------------------------------------------------------
    async def _receive(self) -> None:
        await channel_receive_forever(self.layer, self.channel, self._handle, self._reachable)

    def _reachable(self, reachable: bool) -> None:
        """The channel layer stopped (or resumed) delivering: while it is down no subscriber
        would get anything, so each is told (its connection closes, 1013) and new
        subscriptions are refused (``subscribe``) until a receive works again."""
        was_down, self.receiving_down = self.receiving_down, not reachable
        if reachable or was_down:
            return
        for feed in self.feeds.values():
            for subscriber in list(feed.subscribers):
                subscriber.feed_unavailable()

    def _handle(self, event: dict[str, Any]) -> None:
        if event.get("type") == "market.batch":
            self.fan_out(event)

    def fan_out(self, event: dict[str, Any]) -> None:
        market_id = self.by_symbol.get(event["market"])
        feed = self.feeds.get(market_id) if market_id is not None else None
        if feed is None or not feed.subscribers:
            return
        batch = batch_render(feed.market, event)
        for subscriber in list(feed.subscribers):
            subscriber.feed_batch(market_id, batch)
        published = event.get("published_at")
        if isinstance(published, int | float):
            FEED_LAG_SECONDS.labels("market").observe(max(time.time() - published, 0.0))
        if event.get("trades") or event.get("book"):
            self._ticker_changed(feed)

    def _ticker_changed(self, feed: MarketFeed) -> None:
        """Coalesce: at most one ticker per market per WS_TICKER_INTERVAL, read and rendered
        once for every local subscriber."""
        if feed.ticker_pending:
            return
        feed.ticker_pending = True
        wait = settings.WS_TICKER_INTERVAL - (time.monotonic() - feed.ticker_sent)
        self._spawn(self._ticker_send(feed, max(wait, 0.0)))

    async def _ticker_send(self, feed: MarketFeed, wait: float) -> None:
        if wait:
            await asyncio.sleep(wait)
        feed.ticker_pending = False
        market_id = feed.market.id
        if not any(s.wants(market_id, "ticker") for s in feed.subscribers):
            return
        feed.ticker_sent = time.monotonic()
        frame = dumps({"channel": "ticker", **await ticker_read(feed.market)})
        for subscriber in list(feed.subscribers):
            if subscriber.wants(market_id, "ticker"):
                subscriber.feed_ticker(market_id, frame)


@database_sync_to_async
def ticker_read(market: Market) -> dict[str, Any]:
    return ticker_get(market=market)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FeedHub] = weakref.WeakKeyDictionary()


def hub_get() -> FeedHub:
    """The hub of the running event loop and the current default channel layer."""
    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    hub = _hubs.get(loop)
    if hub is None or hub.layer is not layer:
        hub = _hubs[loop] = FeedHub(layer)
    return hub
