"""Django's Redis cache without per-request set-up costs, and through Redis outages.

Django keeps a cache object per request context (under ASGI: per request), and each
``RedisCache`` builds its own connection pool, and a new ``redis.Redis`` client (≈ 0.4 ms: it
sets up ~170 response callbacks) for every single operation. Here every cache object of a
process shares one pool per URL and one client per pool; both are thread-safe.

Redis down: the cache holds nothing that is not also in the database (book state, tickers, the
runner's position, throttle histories, API-key rate windows), so a Redis error is a miss — a
read returns the default, a write is dropped — and the callers read the database instead
(``exchange.outages``). Consequences, chosen and documented (README, "Dependency outages"):
DRF's throttles and a consume key's per-minute windows forget their counts, i.e. they let
requests through (rate limits, not money controls: balances, holds and lots are in PostgreSQL).
While Redis is down it is tried at most once per ``RETRY_SECONDS`` per process (a black-holed
host would otherwise cost every request a connect timeout per cache call). A key whose write or
delete was dropped is deleted once Redis answers again, so that no reader then gets a value
older than the database (the book the runner stored before the outage, say).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

from exchange.outages import OutageLog

RETRY_SECONDS = 1.0
LOST_KEYS_LIMIT = 10_000
T = TypeVar("T")


class _RedisHealth:
    """This process's view of the cache's Redis: down since when, and the keys to repair."""

    def __init__(self) -> None:
        self.log = OutageLog("Redis (cache)")
        self.last_failure = float("-inf")
        self.lost: set[Any] = set()
        self.lost_overflow = False
        self.lock = threading.Lock()

    def skip(self) -> bool:
        return self.log.down and time.monotonic() - self.last_failure < RETRY_SECONDS

    def failed(self, error: BaseException, keys: Iterable[Any]) -> None:
        self.last_failure = time.monotonic()
        self.log.failed(error)
        with self.lock:
            for key in keys:
                if len(self.lost) >= LOST_KEYS_LIMIT:
                    self.lost_overflow = True
                    break
                self.lost.add(key)


_healths: dict[tuple[str, ...], _RedisHealth] = {}
_healths_lock = threading.Lock()


def _health_of(servers: Iterable[str]) -> _RedisHealth:
    key = tuple(servers)
    health = _healths.get(key)
    if health is None:
        with _healths_lock:
            health = _healths.setdefault(key, _RedisHealth())
    return health


def cache_redis_down() -> bool:
    """Whether the last call of this process to the default cache's Redis found it unreachable
    (so that an empty answer means "unknown", not "absent")."""
    from django.core.cache import cache

    client = getattr(cache, "_cache", None)
    servers = getattr(client, "_servers", None)
    if not isinstance(client, SharedClientRedisCacheClient) or servers is None:
        return False
    health = _healths.get(tuple(servers))
    return health is not None and health.log.down


class SharedConnectionPool(redis.ConnectionPool):
    """One Redis connection pool per process and URL for Django's cache.

    Without it every request opened a new Redis connection. ``RedisCache`` below uses it.
    """

    _shared: dict[tuple[str, tuple[tuple[str, Any], ...]], redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:  # type: ignore[override]
        key = (url, tuple(sorted(kwargs.items())))
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = redis.ConnectionPool.from_url(url, **kwargs)
            return pool


class SharedClientRedisCacheClient(RedisCacheClient):
    _clients: dict[int, Any] = {}
    _lock = threading.Lock()

    def __init__(self, servers: Any, **options: Any) -> None:
        options.setdefault("pool_class", SharedConnectionPool)
        super().__init__(servers, **options)

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            with self._lock:
                client = self._clients.setdefault(id(pool), self._client(connection_pool=pool))
        return client

    # -- every operation through _call: a Redis error is a miss (see the module docstring) ----
    def _call(self, call: Callable[[], T], fallback: T, written: Iterable[Any] = ()) -> T:
        health = _health_of(self._servers)
        if health.skip():
            health.failed(redis.ConnectionError("still down (not retried yet)"), written)
            return fallback
        try:
            if health.log.down or health.lost:
                self._repair(health)  # before the call: it must not read what was lost
            return call()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            health.failed(error, written)
            return fallback

    def _repair(self, health: _RedisHealth) -> None:
        """Redis answers again: delete the keys whose write was dropped meanwhile."""
        with health.lock:
            lost, health.lost = list(health.lost), set()
            overflow, health.lost_overflow = health.lost_overflow, False
        try:
            for start in range(0, len(lost), 500):
                RedisCacheClient.delete_many(self, lost[start : start + 500])
        except BaseException:
            with health.lock:
                health.lost.update(lost)
                health.lost_overflow |= overflow
            raise
        if overflow:
            health.log.logger.warning(
                "more than %d cache writes were dropped during the Redis outage: some cached "
                "values may be stale until they expire or are rewritten",
                LOST_KEYS_LIMIT,
            )
        health.log.succeeded()

    def add(self, key: Any, value: Any, timeout: Any) -> bool:
        return self._call(lambda: RedisCacheClient.add(self, key, value, timeout), False, [key])

    def get(self, key: Any, default: Any) -> Any:
        return self._call(lambda: RedisCacheClient.get(self, key, default), default)

    def set(self, key: Any, value: Any, timeout: Any) -> None:
        self._call(lambda: RedisCacheClient.set(self, key, value, timeout), None, [key])

    def touch(self, key: Any, timeout: Any) -> bool:
        return self._call(lambda: RedisCacheClient.touch(self, key, timeout), False)

    def delete(self, key: Any) -> bool:
        return self._call(lambda: RedisCacheClient.delete(self, key), False, [key])

    def get_many(self, keys: Any) -> dict[Any, Any]:
        return self._call(lambda: RedisCacheClient.get_many(self, keys), {})

    def has_key(self, key: Any) -> bool:
        return self._call(lambda: RedisCacheClient.has_key(self, key), False)

    def incr(self, key: Any, delta: int) -> int:
        # a counter that cannot be read starts again: the window forgets (fails open)
        return self._call(lambda: RedisCacheClient.incr(self, key, delta), delta, [key])

    def set_many(self, data: dict[Any, Any], timeout: Any) -> None:
        self._call(lambda: RedisCacheClient.set_many(self, data, timeout), None, list(data))

    def delete_many(self, keys: Any) -> None:
        keys = list(keys)
        self._call(lambda: RedisCacheClient.delete_many(self, keys), None, keys)


class RedisCache(DjangoRedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        timeout = getattr(settings, "REDIS_TIMEOUT_SECONDS", 2.0)
        options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
        params = {**params, "OPTIONS": {**options, **params.get("OPTIONS", {})}}
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
