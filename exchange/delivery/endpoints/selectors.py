"""Reads of provider endpoints: the gateway's routing interface, the ask check, public stats.

Gateway interface (helper of issue #13; keyword-only, sync and async forms):

- ``endpoint_for(*, provider_id, markets) -> Upstream | None`` — the provider's healthy endpoint
  serving a model (its output market's, else its input market's), key decrypted.
- ``healthy_provider_ids(*, markets) -> set[int]`` — providers with a healthy endpoint in any of
  ``markets``.
- ``request_outcome_record`` (a write: ``services.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import Profile, User
from exchange.delivery.endpoints.crypto import secret_decrypt
from exchange.delivery.endpoints.errors import EndpointUnhealthy
from exchange.delivery.endpoints.models import (
    Endpoint,
    EndpointEvent,
    EndpointOutage,
    HealthStatus,
)
from exchange.errors import EndpointNotFound
from exchange.markets.models import Market, TokenKind


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where and how the gateway forwards a request. ``api_key`` is left out of ``repr`` so
    that logging an Upstream never writes the key."""

    endpoint_id: int
    provider_id: int
    base_url: str
    api_key: str = field(repr=False)
    model_id: str
    concurrency_limit: int


def _preferred(endpoints: Iterable[Endpoint], markets: list[Market]) -> Endpoint | None:
    # Completion tokens are what a provider serves for a living: the output market's endpoint
    # wins when both markets of a model have one.
    kinds = {market.id: market.token_kind for market in markets}
    ranked = sorted(
        endpoints, key=lambda e: (kinds.get(e.market_id) != TokenKind.OUTPUT, e.market_id)
    )
    return ranked[0] if ranked else None


def _upstream(endpoint: Endpoint) -> Upstream:
    return Upstream(
        endpoint_id=endpoint.id,
        provider_id=endpoint.provider_id,
        base_url=endpoint.base_url,
        api_key=secret_decrypt(endpoint.api_key_ciphertext),
        model_id=endpoint.model_id,
        concurrency_limit=endpoint.concurrency_limit,
    )


def _healthy(*, markets: list[Market]) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(
        market_id__in=[market.id for market in markets], status=HealthStatus.HEALTHY
    ).order_by()


def endpoint_for(*, provider_id: int, markets: list[Market]) -> Upstream | None:
    """The provider's healthy endpoint for these markets (output's, else input's), or None."""
    endpoint = _preferred(_healthy(markets=markets).filter(provider_id=provider_id), markets)
    return _upstream(endpoint) if endpoint is not None else None


async def aendpoint_for(*, provider_id: int, markets: list[Market]) -> Upstream | None:
    """``endpoint_for`` for async callers (Django's async ORM; no thread hop)."""
    endpoints = [e async for e in _healthy(markets=markets).filter(provider_id=provider_id)]
    endpoint = _preferred(endpoints, markets)
    return _upstream(endpoint) if endpoint is not None else None


def healthy_provider_ids(*, markets: list[Market]) -> set[int]:
    return set(_healthy(markets=markets).values_list("provider_id", flat=True))


async def ahealthy_provider_ids(*, markets: list[Market]) -> set[int]:
    return {pid async for pid in _healthy(markets=markets).values_list("provider_id", flat=True)}


# --- the ask check (called by orders.services and orders.capacity) -------------------------------
def outages_get(*, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], datetime | None]:
    """For each (provider id, market id): since when its endpoint there has failed without
    answering (``failing_since``; a down endpoint has failed since then too), or since its
    endpoint there was removed (and none registered again); None while it answers, or when the
    provider never had an endpoint there (capacity issued without one, as staff corrections
    and benchmarks do: not judged here)."""
    wanted = set(keys)
    found: dict[tuple[int, int], datetime | None] = dict.fromkeys(wanted)
    if not wanted:
        return found
    providers = {provider for provider, _ in wanted}
    markets = {market for _, market in wanted}
    rows = Endpoint.objects.filter(
        provider_id__in=providers, market_id__in=markets, failing_since__isnull=False
    ).values_list("provider_id", "market_id", "failing_since")
    for provider, market, failing_since in rows:
        if (provider, market) in found:
            found[provider, market] = failing_since
    # an endpoint removed and not registered again: nothing answers since its removal
    removed = EndpointOutage.objects.filter(
        provider_id__in=providers, market_id__in=markets, ended_at__isnull=True
    ).values_list("provider_id", "market_id", "started_at")
    for provider, market, started in removed:
        if (provider, market) in found:
            known = found[provider, market]
            found[provider, market] = started if known is None else min(known, started)
    return found


def outage_intervals_get(
    *, market_id: int, provider_ids: Iterable[int], start: datetime, end: datetime
) -> dict[int, list[tuple[datetime, datetime]]]:
    """Each provider's outages (DOWN: past the dead-man window) of its endpoint in the market
    that overlap [start, end]: the past ones and the one going on (up to now)."""
    wanted = set(provider_ids)
    found: dict[int, list[tuple[datetime, datetime]]] = {provider: [] for provider in wanted}
    if not wanted:
        return found
    now = timezone.now()
    past = (
        EndpointOutage.objects.filter(provider_id__in=wanted, market_id=market_id)
        .filter(started_at__lt=end)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=start))
        .values_list("provider_id", "started_at", "ended_at")
    )
    for provider, started, ended in past:  # an open one: the endpoint was removed
        found[provider].append((started, ended if ended is not None else max(now, started)))
    current = Endpoint.objects.filter(
        provider_id__in=wanted,
        market_id=market_id,
        status=HealthStatus.DOWN,
        down_since__isnull=False,
        down_since__lt=end,
    ).values_list("provider_id", "down_since")
    for provider, down_since in current:
        found[provider].append((down_since, max(now, down_since)))
    return found


def _is_demo_data(user: User) -> bool:
    """A demo account's orders are demo data: the seeded bots (no password: nobody logs in as
    them, with or without ``DEMO``, e.g. ``manage.py simulate``), and while ``settings.DEMO``
    is on, every account of the demo domain (the public demo login too). Anyone can sign up
    with a demo-domain address, so outside DEMO a password-holding account is not exempt."""
    from exchange.demo.seed import DEMO_DOMAIN

    if not user.email.endswith(f"@{DEMO_DOMAIN}"):
        return False
    return bool(settings.DEMO) or not user.has_usable_password()


# One round trip: the provider's endpoint status in the market, and whether they have live
# capacity there (the orders app's table, read here to keep the check to a single query).
_ASK_CHECK_SQL = """
SELECT
    (SELECT e.status FROM delivery_endpoints_endpoint e
      WHERE e.provider_id = %s AND e.market_id = %s),
    EXISTS (SELECT 1 FROM orders_capacitylisting c
             WHERE c.provider_id = %s AND c.market_id = %s AND c.status IN ('active', 'expiring'))
"""


def ask_check(*, user: User, market: Market, listing: bool = False) -> None:
    """Refuse an ask the provider could not deliver: ``EndpointUnhealthy``.

    Applies to a seller with an endpoint in the market or live capacity listed there (a
    provider selling its capacity), and to every capacity listing with an ask (``listing``):
    those need an endpoint that is not down (a dead-man switch that fired). A failing endpoint
    keeps its asks until the dead-man window has passed. Sellers with neither (buyers reselling
    what they bought) are not concerned. Demo data is exempt (``_is_demo_data``): the demo's
    bots quote in every market, including those without a demo upstream.
    """
    if _is_demo_data(user):
        return
    with connection.cursor() as cursor:
        cursor.execute(_ASK_CHECK_SQL, [user.pk, market.pk, user.pk, market.pk])
        status, has_capacity = cursor.fetchone()
    if status is None and not (has_capacity or listing):
        return
    if status is None:
        raise EndpointUnhealthy(
            f"Register an endpoint for {market.symbol} before placing asks there "
            "(/api/v1/provider/endpoints or the provider dashboard).",
            details={"market": market.symbol, "endpoint": None},
        )
    if status == HealthStatus.DOWN:
        raise EndpointUnhealthy(
            f"Your endpoint for {market.symbol} is down (it failed its health checks), so your "
            "asks there were cancelled; new asks are accepted once it answers again.",
            details={"market": market.symbol, "endpoint": "down"},
        )


# --- provider's own endpoints ------------------------------------------------------------------
def endpoint_list(*, user: User) -> QuerySet[Endpoint]:
    return Endpoint.objects.select_related("market").filter(provider=user).order_by("id")


def endpoint_get(*, user: User, endpoint_id: int) -> Endpoint:
    """The user's endpoint; another provider's is "not found", like a missing one."""
    endpoint = (
        Endpoint.objects.select_related("market")
        .filter(provider=user, id=endpoint_id)
        .order_by()
        .first()
    )
    if endpoint is None:
        raise EndpointNotFound(f"No endpoint {endpoint_id}.", details={"endpoint_id": endpoint_id})
    return endpoint


def event_list(*, user: User) -> QuerySet[EndpointEvent]:
    return EndpointEvent.objects.select_related("market").filter(provider=user).order_by("-id")


# --- public statistics -------------------------------------------------------------------------
WINDOWS = {"5m": timedelta(minutes=5), "30m": timedelta(minutes=30), "1d": timedelta(days=1)}
LATENCY_WINDOW = "30m"
RATIO_STEP = Decimal("0.0001")

# percentile_disc (nearest rank: the smallest sample with at least p of the samples at or
# below it) returns one of the samples, exactly: no interpolation, no float.
_STATS_SQL = """
SELECT provider_id,
       count(*) FILTER (WHERE ok AND at > %(t5m)s),
       count(*) FILTER (WHERE NOT ok AND at > %(t5m)s),
       count(*) FILTER (WHERE ok AND at > %(t30m)s),
       count(*) FILTER (WHERE NOT ok AND at > %(t30m)s),
       count(*) FILTER (WHERE ok),
       count(*) FILTER (WHERE NOT ok),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY first_token_ms) FILTER (WHERE at > %(t30m)s),
       percentile_disc(0.9) WITHIN GROUP (ORDER BY first_token_ms) FILTER (WHERE at > %(t30m)s),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY output_tokens_per_second)
           FILTER (WHERE at > %(t30m)s),
       percentile_disc(0.9) WITHIN GROUP (ORDER BY output_tokens_per_second)
           FILTER (WHERE at > %(t30m)s)
  FROM delivery_endpoints_healthsample
 WHERE market_id = %(market)s AND at > %(t1d)s AND at <= %(now)s
 GROUP BY provider_id
"""


def _uptime(successes: int, errors: int) -> dict[str, Any]:
    total = successes + errors
    ratio = (
        (Decimal(successes) / Decimal(total)).quantize(RATIO_STEP, rounding=ROUND_HALF_EVEN)
        if total
        else None
    )
    return {"ratio": ratio, "successes": successes, "errors": errors}


def _tps(value: Decimal | None) -> Decimal | None:
    return value.normalize() if value is not None else None


def market_provider_stats(*, market: Market, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per provider in the market: endpoint status, uptime over 5 min / 30 min / 1 day
    (successes / (successes + errors), probes and served requests alike), time to first token
    and output tokens/s p50/p90 over the last 30 min. Providers with an endpoint or a sample in
    the last day; best uptime first."""
    moment = now or timezone.now()
    params = {f"t{name}": moment - span for name, span in WINDOWS.items()}
    params.update(market=market.pk, now=moment)
    with connection.cursor() as cursor:
        cursor.execute(_STATS_SQL, params)
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    statuses = dict(
        Endpoint.objects.filter(market=market).order_by().values_list("provider_id", "status")
    )
    provider_ids = set(rows) | set(statuses)
    names = dict(
        Profile.objects.filter(user_id__in=provider_ids).values_list("user_id", "display_name")
    )
    result = []
    for provider_id in provider_ids:
        row = rows.get(provider_id, (0, 0, 0, 0, 0, 0, None, None, None, None))
        result.append(
            {
                "provider_id": provider_id,
                "provider": names.get(provider_id) or f"Provider #{provider_id}",
                "status": statuses.get(provider_id),
                "uptime": {
                    "5m": _uptime(row[0], row[1]),
                    "30m": _uptime(row[2], row[3]),
                    "1d": _uptime(row[4], row[5]),
                },
                "first_token_ms": {"p50": row[6], "p90": row[7]},
                "output_tokens_per_second": {"p50": _tps(row[8]), "p90": _tps(row[9])},
            }
        )
    # Best recent uptime first; providers without samples last; ties by id (stable pages).
    result.sort(
        key=lambda r: (
            r["uptime"]["30m"]["ratio"] is None,
            -(r["uptime"]["30m"]["ratio"] or 0),
            r["provider_id"],
        )
    )
    return result
