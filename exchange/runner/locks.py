"""The single-writer rule: a PostgreSQL session advisory lock per market.

The lock lives as long as the database session of the thread that took it; if the runner
process dies, PostgreSQL drops the session and another runner takes the market over.
"""

from __future__ import annotations

from django.db import connection

LOCK_NAMESPACE = 0x7E11  # first key of the two-key advisory lock: "token exchange runner"


def market_lock_try(market_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, market_id])
        return bool(cursor.fetchone()[0])


def market_lock_release(market_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, market_id])
