"""Wake requests that wait for the runner, instead of each of them polling.

After each commit the runner announces how far it got in a market (``progress_announce``): in
the cache (for anyone who missed the message), to waiters in its own process, and with Redis
``PUBLISH`` to every other process. One daemon thread per process listens on that Redis channel
and wakes that process's waiters (``progress_wait``), which then re-read their orders once.
Without Redis (``make run``: the runner is a thread of the one served process) the in-process
wake-up is all there is. A waiter never depends on the message alone: it re-checks the cache
at least every ``FALLBACK_SECONDS``, so a lost message (Redis restart) costs latency, not an
answer. With the cache's Redis unreachable the waiters read the runner's position from the
database instead (``MarketEngineState.seq``, committed with each batch).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache

from exchange.cache import cache_redis_down
from exchange.marketdata.state import runner_seq_key, runner_seq_store
from exchange.outages import OutageLog
from orders.models import MarketEngineState

logger = logging.getLogger(__name__)

CHANNEL = "exchange:runner-progress"
FALLBACK_SECONDS = 0.05

_condition = threading.Condition()
_versions: dict[int, int] = {}  # market id -> the runner's last announced journal position
_listener: threading.Thread | None = None
_client: Any = None
_callbacks: list[Callable[[], None]] = []  # told of every move (``progress_listen``)
_publish_outage = OutageLog("Redis (runner progress publish)", logger)
_listen_outage = OutageLog("Redis (runner progress listener)", logger)


def _redis() -> Any:
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    return _client


def _seen(market_id: int, seq: int) -> None:
    with _condition:
        moved = seq > _versions.get(market_id, -1)
        if moved:
            _versions[market_id] = seq
            _condition.notify_all()
    if moved:
        for callback in list(_callbacks):
            callback()


def progress_unlisten(callback: Callable[[], None]) -> None:
    if callback in _callbacks:
        _callbacks.remove(callback)


def progress_listen(callback: Callable[[], None]) -> None:
    """Call ``callback`` (quickly, from the thread that heard it) whenever a market moves; also
    starts this process's listener, as ``progress_version`` does."""
    _callbacks.append(callback)
    _listener_start()


def progress_announce(*, market_id: int, seq: int) -> None:
    """The runner committed ``market_id``'s journal up to ``seq`` (call after commit). The
    three ways are independent: one failing (Redis restarting) does not stop the others."""
    _seen(market_id, seq)
    if settings.REDIS_URL:
        try:
            _redis().publish(CHANNEL, f"{market_id}:{seq}")
        except Exception as error:  # logged once per outage; waiters poll meanwhile
            _publish_outage.failed(error)
        else:
            _publish_outage.succeeded()
    runner_seq_store(market_id=market_id, seq=seq)


def _listen_forever() -> None:
    while True:
        try:
            pubsub = _redis().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            _listen_outage.succeeded()
            for message in pubsub.listen():
                market_id, _, seq = message["data"].decode().partition(":")
                _seen(int(market_id), int(seq))
        except Exception as error:  # Redis restarted or unreachable: waiters poll meanwhile
            _listen_outage.failed(error)
            time.sleep(1.0)


def _listener_start() -> None:
    global _listener
    if _listener is not None or not settings.REDIS_URL:
        return
    with _condition:
        if _listener is None:
            _listener = threading.Thread(
                target=_listen_forever, name="runner-progress", daemon=True
            )
            _listener.start()


def progress_version(market_ids: Iterable[int]) -> tuple[int | None, ...]:
    """Where the runner is, as far as this process knows (the cache fills in for a process
    that has not heard anything yet)."""
    _listener_start()
    ids = sorted(market_ids)
    with _condition:
        known = [_versions.get(market_id) for market_id in ids]
    if any(seq is None for seq in known):
        _from_cache(ids)
        with _condition:
            known = [_versions.get(market_id) for market_id in ids]
    return tuple(known)


def _from_cache(ids: list[int]) -> None:
    found = cache.get_many([runner_seq_key(market_id) for market_id in ids])
    missing = [market_id for market_id in ids if runner_seq_key(market_id) not in found]
    for market_id in ids:
        value = found.get(runner_seq_key(market_id))
        if value is not None:
            _seen(market_id, int(value))
    if missing and cache_redis_down():
        # the cache's Redis is unreachable: the committed position is in the database
        rows = MarketEngineState.objects.filter(market_id__in=missing)
        for market_id, seq in rows.values_list("market_id", "seq"):
            _seen(market_id, seq)


def progress_wait(
    market_ids: Iterable[int], *, since: tuple[int | None, ...], timeout: float
) -> None:
    """Block until a market moves past ``since`` (from ``progress_version``) or ``timeout``
    (at most ``FALLBACK_SECONDS``, after which the cache is consulted)."""
    ids = sorted(market_ids)
    slice_end = time.monotonic() + min(timeout, FALLBACK_SECONDS)

    def moved() -> bool:
        return tuple(_versions.get(market_id) for market_id in ids) != since

    with _condition:
        if _condition.wait_for(moved, timeout=max(0.0, slice_end - time.monotonic())):
            return
    # nothing heard: a message may have been lost; the cache has the runner's position
    _from_cache(ids)
