"""The single-writer rule: a PostgreSQL session advisory lock per market.

The lock lives as long as the database session of the thread that took it; if the runner
process dies, PostgreSQL drops the session and another runner takes the market over. SQLite has
no advisory locks: there the runner is embedded in the one served process, which takes an
in-process lock instead.
"""

from __future__ import annotations

import threading

from django.db import connection

LOCK_NAMESPACE = 0x7E11  # first key of the two-key advisory lock: "token exchange runner"

_local_locks: dict[int, threading.Lock] = {}
_local_guard = threading.Lock()


def market_lock_try(market_id: int) -> bool:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, market_id])
            return bool(cursor.fetchone()[0])
    with _local_guard:
        lock = _local_locks.setdefault(market_id, threading.Lock())
    return lock.acquire(blocking=False)


def market_lock_release(market_id: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, market_id])
        return
    lock = _local_locks.get(market_id)
    if lock is not None and lock.locked():
        lock.release()
