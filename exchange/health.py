"""Readiness: can this instance serve? One check per dependency, for ``/healthz``.

- ``database``: a round trip to PostgreSQL. Without it nothing can be served: not ready (503).
- ``redis``: a PING to each Redis the instance uses (the cache, the channel layer). Without it
  the API, the pages and orders still work (see ``exchange.cache``) but the live feed does not.
- ``runner``: per market, how long the oldest command waiting for the engine has waited. Past
  ``HEALTHZ_RUNNER_MAX_LAG_SECONDS`` orders are accepted but not matched.

A failing ``redis`` or ``runner`` check makes the instance ``degraded``, still ready (200): both
are shared by every instance, so failing readiness for them would take every instance out of the
balancer at once and turn a degraded site into a down one. Alert on the body (or on
``exchange_runner_lag_seconds``), not on the status.

Errors are reported by class name only (the endpoint is public); the details are logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from exchange.markets.models import Market
from orders.models import OrderCommand

logger = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 1.0
_clients: dict[str, redis.Redis] = {}


def _redis_urls() -> list[str]:
    """The Redis servers this instance talks to (cache and channel layer), each once."""
    urls: list[str] = []
    cache = settings.CACHES.get("default", {})
    if cache.get("BACKEND") == "exchange.cache.RedisCache":
        urls.append(cache["LOCATION"])
    layer = settings.CHANNEL_LAYERS.get("default", {})
    if str(layer.get("BACKEND", "")).startswith("channels_redis"):
        for host in layer.get("CONFIG", {}).get("hosts", []):
            address = host.get("address") if isinstance(host, dict) else host
            if isinstance(address, str):
                urls.append(address)
    return list(dict.fromkeys(urls))


def _ping(url: str) -> None:
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(
            url, socket_connect_timeout=PING_TIMEOUT_SECONDS, socket_timeout=PING_TIMEOUT_SECONDS
        )
    client.ping()


def _timed(name: str, check: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        details = check() or {}
        result: dict[str, Any] = {"ok": True, **details}
    except Exception as error:
        logger.warning("health check %s failed: %s: %s", name, type(error).__name__, error)
        result = {"ok": False, "error": type(error).__name__}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> dict[str, Any]:
    urls = _redis_urls()
    for url in urls:
        _ping(url)
    return {"servers": len(urls)}


def _runner() -> dict[str, Any]:
    oldest = OrderCommand.objects.filter(market=OuterRef("pk"), seq__isnull=True).order_by("id")
    rows = Market.objects.annotate(
        oldest_pending=Subquery(oldest.values("created_at")[:1])
    ).values_list("symbol", "oldest_pending", "engine_state__seq")
    now = timezone.now()
    limit = settings.HEALTHZ_RUNNER_MAX_LAG_SECONDS
    markets = {}
    stalled = []
    for symbol, pending_since, seq in rows:
        lag = (now - pending_since).total_seconds() if pending_since else 0.0
        markets[symbol] = {"seq": seq or 0, "oldest_pending_seconds": round(lag, 3)}
        if lag > limit:
            stalled.append(symbol)
    if stalled:
        raise RunnerStalled(stalled, markets)
    return {"markets": markets}


class RunnerStalled(Exception):
    def __init__(self, symbols: list[str], markets: dict[str, Any]) -> None:
        super().__init__(f"commands waiting over the limit in {', '.join(symbols)}")
        self.markets = markets


def health_report() -> tuple[bool, dict[str, Any]]:
    """(ready, the report). Every check runs even when an earlier one failed."""
    checks = {"database": _timed("database", _database)}
    checks["redis"] = (
        _timed("redis", _redis) if _redis_urls() else {"ok": True, "servers": 0, "ms": 0.0}
    )
    if checks["database"]["ok"]:
        started = time.monotonic()
        try:
            checks["runner"] = {"ok": True, **_runner()}
        except RunnerStalled as stalled:
            checks["runner"] = {"ok": False, "error": "stalled", "markets": stalled.markets}
        except Exception as error:
            logger.warning("health check runner failed: %s", error)
            checks["runner"] = {"ok": False, "error": type(error).__name__}
        checks["runner"]["ms"] = round((time.monotonic() - started) * 1000, 1)
    else:
        checks["runner"] = {"ok": False, "error": "database unavailable"}
    ready = checks["database"]["ok"]
    if not ready:
        status = "unavailable"
    else:
        status = "ok" if all(check["ok"] for check in checks.values()) else "degraded"
    return ready, {"status": status, "checks": checks}
