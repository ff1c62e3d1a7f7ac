"""Endpoint concurrency slots, shared by every gateway process.

A provider's endpoint says how many requests it serves at once (``Endpoint.concurrency_limit``).
With several gateway processes (workers, hosts) a per-process count would let each of them send
that many. The slots live in Redis instead (the cache's connection): one sorted set per
endpoint, a member per open attempt (``{generation id}.{attempt}``) scored with the time it
expires. Taking a slot drops the expired ones first, so the slots of a process that was killed
come back by themselves after ``GATEWAY_MAX_REQUEST_SECONDS`` and a margin; the key itself
expires too. One Redis call to take (in the request's first database hop) and one to give back
(in its last): no database round-trip.

Without Redis (the cache is not Redis: development, some tests) the slots are counted in this
process. A Redis that fails is not a reason to refuse requests: the slot is granted (logged).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

PREFIX = "gateway:slots:"
# How long after a request's time limit its slot is still counted (settling, the grace of a
# stopped stream); after that an unreleased slot is the leak of a dead process.
MARGIN_SECONDS = 60

_TAKE = """
local key = KEYS[1]
local now, expires, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZSCORE', key, ARGV[1]) then return 1 end
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, expires, ARGV[1])
local ttl = math.max(math.ceil(expires - now), 0) + 1
if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
return 1
"""

_script: Any = None
_local: dict[int, dict[str, float]] = {}
_local_lock = threading.Lock()


def _redis() -> Any:
    """The cache's Redis client, or None when the cache is not Redis."""
    get_client = getattr(getattr(cache, "_cache", None), "get_client", None)
    return get_client(write=True) if get_client is not None else None


def _lifetime() -> float:
    return settings.GATEWAY_MAX_REQUEST_SECONDS + MARGIN_SECONDS


def take(*, endpoint_id: int, slot: str, limit: int) -> bool:
    """Take one of the endpoint's ``limit`` slots for ``slot``; False when all are taken."""
    global _script
    now = time.time()
    expires = now + _lifetime()
    client = _redis()
    if client is None:
        with _local_lock:
            taken = _local.setdefault(endpoint_id, {})
            for name in [name for name, until in taken.items() if until <= now]:
                del taken[name]
            if slot not in taken and len(taken) >= limit:
                return False
            taken[slot] = expires
            return True
    try:
        if _script is None:
            _script = client.register_script(_TAKE)
        granted = _script(
            keys=[f"{PREFIX}{endpoint_id}"],
            args=[slot, repr(now), repr(expires), limit],
            client=client,
        )
    except RedisError:
        logger.warning("endpoint %s: slot not counted (Redis failed)", endpoint_id, exc_info=True)
        return True
    return bool(granted)


def take_many(*, asks: list[tuple[int, str, int]]) -> list[bool]:
    """``take`` for each (endpoint id, slot, limit), in order, in one Redis round trip (a
    pipeline: each script still runs atomically, in turn)."""
    global _script
    client = _redis()
    if client is None or len(asks) < 2:
        return [take(endpoint_id=e, slot=slot, limit=limit) for e, slot, limit in asks]
    now = time.time()
    expires = now + _lifetime()
    try:
        if _script is None:
            _script = client.register_script(_TAKE)
        pipeline = client.pipeline(transaction=False)
        for endpoint_id, slot, limit in asks:
            _script(
                keys=[f"{PREFIX}{endpoint_id}"],
                args=[slot, repr(now), repr(expires), limit],
                client=pipeline,
            )
        return [bool(granted) for granted in pipeline.execute()]
    except RedisError:
        logger.warning("%s slots not counted (Redis failed)", len(asks), exc_info=True)
        return [True] * len(asks)


def give_back_many(*, slots: list[tuple[int, str]]) -> None:
    """``give_back`` for each (endpoint id, slot), in one Redis round trip."""
    client = _redis()
    if client is None or len(slots) < 2:
        for endpoint_id, slot in slots:
            give_back(endpoint_id=endpoint_id, slot=slot)
        return
    try:
        pipeline = client.pipeline(transaction=False)
        for endpoint_id, slot in slots:
            pipeline.zrem(f"{PREFIX}{endpoint_id}", slot)
        pipeline.execute()
    except RedisError:
        logger.warning("%s slots not given back", len(slots), exc_info=True)


def give_back(*, endpoint_id: int, slot: str) -> None:
    """Release ``slot`` (idempotent; a lost release expires by itself)."""
    client = _redis()
    if client is None:
        with _local_lock:
            _local.get(endpoint_id, {}).pop(slot, None)
        return
    try:
        client.zrem(f"{PREFIX}{endpoint_id}", slot)
    except RedisError:
        logger.warning("endpoint %s: slot %s not given back", endpoint_id, slot, exc_info=True)


def in_use(*, endpoint_id: int) -> int:
    """Slots taken now (for tests and the operator)."""
    now = time.time()
    client = _redis()
    if client is None:
        with _local_lock:
            return sum(1 for until in _local.get(endpoint_id, {}).values() if until > now)
    return int(client.zcount(f"{PREFIX}{endpoint_id}", f"({now!r}", "+inf"))
