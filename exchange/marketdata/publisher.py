"""Publishes what the runner committed to channel-layer groups (called after commit only).

Groups: ``market.<market id>`` gets trades and book changes; ``user.<user id>`` gets that
user's order updates and fills. Channels delivers at most once, so book updates carry ``seq``.

With the Redis channel layer the runner does not wait for Redis: messages go, in order, to a
queue that one event loop in a background thread drains (one persistent connection pool; an
``async_to_sync`` call per batch opened a new event loop and Redis connection each time, ~8 ms
of the runner's batch). Past ``QUEUE_LIMIT`` queued messages (Redis down) new ones are dropped
and logged: subscribers notice the gap by ``seq`` and resync. The in-memory layer (``make
run``, tests) is bound to the caller's event loop, so it is still called directly.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from exchange.outages import OutageLog, dependency_outage

logger = logging.getLogger(__name__)


def market_group(market_id: int) -> str:
    return f"market.{market_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


QUEUE_LIMIT = 10_000


class _Background:
    """One event loop thread that sends queued messages in order."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.queued = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.loop.run_forever, name="feed-publisher", daemon=True).start()
        self.drain = asyncio.run_coroutine_threadsafe(self._drain(), self.loop)
        atexit.register(self.stop)

    def stop(self) -> None:
        """At exit: give queued messages a moment, then stop the loop quietly."""
        deadline = time.monotonic() + 2.0
        while self.queued and time.monotonic() < deadline:
            time.sleep(0.01)
        self.drain.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)

    def put(self, item: tuple[Any, ...]) -> None:
        with self.lock:
            if self.queued >= QUEUE_LIMIT:
                logger.error("feed publisher queue full: message for market %s dropped", item[0])
                return
            self.queued += 1
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def _drain(self) -> None:
        while True:
            market_id, market_message, user_messages = await self.queue.get()
            try:
                await _send_all(self.layer, market_id, market_message, user_messages)
            except Exception as error:  # a feed outage must never stop the runner
                _failed(market_id, error)
            else:
                _outage.succeeded()
            finally:
                with self.lock:
                    self.queued -= 1


_background: _Background | None = None
_background_lock = threading.Lock()


def _background_for(layer: Any) -> _Background | None:
    global _background
    if not type(layer).__module__.startswith("channels_redis"):
        return None
    with _background_lock:
        # a forked child has no thread draining its parent's queue: start its own
        if _background is None or _background.layer is not layer or _background.pid != os.getpid():
            _background = _Background(layer)
        return _background


def publish_batch(
    *,
    market_id: int,
    market_message: dict[str, Any] | None,
    user_messages: dict[int, list[dict[str, Any]]],
) -> None:
    """``market_message`` None: only the users' updates (the runner coalesces public data)."""
    layer = get_channel_layer()
    if layer is None:
        return
    background = _background_for(layer)
    if background is not None:
        background.put((market_id, market_message, user_messages))
        return
    try:
        async_to_sync(_send_all)(layer, market_id, market_message, user_messages)
    except Exception as error:  # a feed outage must never stop the runner; clients resync by seq
        _failed(market_id, error)
    else:
        _outage.succeeded()


# Redis down: one WARNING when publishing starts failing and one INFO when it works again, not a
# traceback per batch; what was not sent shows up as a seq gap and subscribers resync.
_outage = OutageLog("channel layer (publishing)", logger)


def _failed(market_id: int, error: Exception) -> None:
    if dependency_outage(error):
        _outage.failed(error)
    else:
        logger.error("publishing market %s failed", market_id, exc_info=error)


async def _send_all(
    layer: Any,
    market_id: int,
    market_message: dict[str, Any] | None,
    user_messages: dict[int, list[dict[str, Any]]],
) -> None:
    if market_message is not None:
        await layer.group_send(market_group(market_id), {"type": "market.batch", **market_message})
    for user_id, updates in user_messages.items():
        await layer.group_send(user_group(user_id), {"type": "user.updates", "updates": updates})
