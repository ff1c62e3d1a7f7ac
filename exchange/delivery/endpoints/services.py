"""Writes of provider endpoints: register / change / remove, health, the dead-man switch.

Gateway interface: ``request_outcome_record(*, endpoint_id, ok, first_token_ms,
output_tokens_per_second)`` (and ``arequest_outcome_record`` for async callers) — every served
request feeds the public statistics as the probes do.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Profile, User
from exchange.delivery.endpoints import egress, upstream
from exchange.delivery.endpoints.crypto import secret_decrypt, secret_encrypt, secret_rotate
from exchange.delivery.endpoints.errors import EndpointExists
from exchange.delivery.endpoints.models import (
    Endpoint,
    EndpointEvent,
    EndpointOutage,
    EventKind,
    HealthSample,
    HealthStatus,
    SampleSource,
)
from exchange.delivery.endpoints.selectors import endpoint_get
from exchange.errors import ExchangeError, Forbidden, ValidationFailed
from exchange.markets.models import Market

logger = logging.getLogger(__name__)

# Samples are kept a little longer than the longest statistics window (1 day).
SAMPLE_RETENTION = timedelta(days=1, hours=1)
MAX_CONCURRENCY_LIMIT = 10_000


def _require_provider(user: User) -> None:
    profile = Profile.objects.filter(user=user).first()
    if profile is None or not profile.is_provider:
        raise Forbidden("Only providers can register endpoints.")


def _base_url_clean(base_url: str) -> str:
    url = (base_url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(
            "base_url must be an http(s) URL, e.g. https://api.example.com/v1.",
            details={"base_url": "invalid"},
        )
    if parts.scheme != "https" and not egress.private_allowed():
        # The upstream key travels in every request: only over TLS (plain http is for local
        # development, the demo and tests: DELIVERY_UPSTREAM_ALLOW_PRIVATE).
        raise ValidationFailed(
            "base_url must be an https URL, e.g. https://api.example.com/v1.",
            details={"base_url": "https_required"},
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        # Credentials in the URL would be stored in clear and shown back: keys go in api_key.
        raise ValidationFailed(
            "base_url takes no credentials, query or fragment; put the key in api_key.",
            details={"base_url": "invalid"},
        )
    return url


def _check(base_url: str, api_key: str, model_id: str) -> None:
    upstream.models_check(
        base_url=base_url,
        api_key=api_key,
        model_id=model_id,
        timeout=settings.DELIVERY_VALIDATE_TIMEOUT_SECONDS,
    )


def _fields_check(model_id: str | None, concurrency_limit: int | None, api_key: str | None) -> None:
    if model_id is not None and not (1 <= len(model_id.strip()) <= 200):
        raise ValidationFailed(
            "model_id must be 1 to 200 characters.", details={"model_id": "invalid"}
        )
    if concurrency_limit is not None and not (1 <= concurrency_limit <= MAX_CONCURRENCY_LIMIT):
        raise ValidationFailed(
            f"concurrency_limit must be 1 to {MAX_CONCURRENCY_LIMIT}.",
            details={"concurrency_limit": "invalid"},
        )
    if api_key is not None and not (1 <= len(api_key) <= 4096):
        raise ValidationFailed(
            "api_key must be 1 to 4096 characters.", details={"api_key": "invalid"}
        )


def endpoint_create(
    *,
    user: User,
    market: Market,
    base_url: str,
    api_key: str,
    model_id: str,
    concurrency_limit: int = 8,
) -> Endpoint:
    """Register the provider's upstream for a market, after a real ``GET {base_url}/models``
    with the key has listed ``model_id`` (``EndpointCheckFailed`` otherwise; nothing stored)."""
    _require_provider(user)
    _fields_check(model_id, concurrency_limit, api_key)
    url = _base_url_clean(base_url)
    model_id = model_id.strip()
    if Endpoint.objects.filter(provider=user, market=market).exists():
        raise EndpointExists(
            f"You already have an endpoint for {market.symbol}; change it instead.",
            details={"market": market.symbol},
        )
    _check(url, api_key, model_id)  # network I/O: before the transaction
    now = timezone.now()
    try:
        with transaction.atomic(durable=True):
            # it answers: the outage its predecessor's removal opened ends here
            EndpointOutage.objects.filter(
                provider=user, market=market, ended_at__isnull=True
            ).update(ended_at=now)
            endpoint = Endpoint.objects.create(
                provider=user,
                market=market,
                base_url=url,
                api_key_ciphertext=secret_encrypt(api_key),
                model_id=model_id,
                concurrency_limit=concurrency_limit,
                status=HealthStatus.HEALTHY,
                last_checked_at=now,
                last_success_at=now,
            )
    except IntegrityError:
        # A concurrent registration for the same market won (unique provider and market).
        raise EndpointExists(
            f"You already have an endpoint for {market.symbol}; change it instead.",
            details={"market": market.symbol},
        ) from None
    logger.info("endpoint %s registered by provider %s for %s", endpoint.id, user.pk, market)
    return endpoint


def endpoint_update(
    *,
    user: User,
    endpoint_id: int,
    base_url: str | None = None,
    api_key: str | None = None,
    model_id: str | None = None,
    concurrency_limit: int | None = None,
) -> Endpoint:
    """Change an endpoint. A new URL, key or model id is checked as on registration (with the
    stored key when no new one is given); passing the check counts as the endpoint answering."""
    endpoint = endpoint_get(user=user, endpoint_id=endpoint_id)
    _fields_check(model_id, concurrency_limit, api_key)
    url = _base_url_clean(base_url) if base_url is not None else endpoint.base_url
    model = model_id.strip() if model_id is not None else endpoint.model_id
    checked = base_url is not None or api_key is not None or model_id is not None
    if checked:
        key = api_key if api_key is not None else secret_decrypt(endpoint.api_key_ciphertext)
        _check(url, key, model)
    now = timezone.now()
    with transaction.atomic(durable=True):
        endpoint = Endpoint.objects.select_for_update().get(id=endpoint.id)
        endpoint.base_url = url
        endpoint.model_id = model
        if api_key is not None:
            endpoint.api_key_ciphertext = secret_encrypt(api_key)
        if concurrency_limit is not None:
            endpoint.concurrency_limit = concurrency_limit
        was_down = endpoint.status == HealthStatus.DOWN
        if checked:
            _mark_answering(endpoint, now)
        endpoint.save()
        if checked and was_down:
            _event_recovered(endpoint)
    return endpoint


def endpoint_delete(*, user: User, endpoint_id: int) -> list[int]:
    """Remove an endpoint. The provider's open asks in that market go with it (nothing could
    deliver what they sell); returns the ids of the asks whose cancel was journalled."""
    endpoint = endpoint_get(user=user, endpoint_id=endpoint_id)
    market = endpoint.market
    with transaction.atomic(durable=True):
        # locked: a probe finishing meanwhile must not close an outage this one also opens
        endpoint = Endpoint.objects.select_for_update().select_related("market").get(id=endpoint.id)
        now = timezone.now()
        down = endpoint.status == HealthStatus.DOWN and endpoint.down_since is not None
        EndpointOutage.objects.create(
            provider_id=endpoint.provider_id,
            market_id=endpoint.market_id,
            started_at=min(endpoint.down_since, now) if down else now,
            ended_at=None,  # until an endpoint is registered there again
        )
        endpoint.delete()
    cancelled = asks_cancel(provider=user, market=market)
    if cancelled:
        EndpointEvent.objects.create(
            provider=user,
            market=market,
            kind=EventKind.REMOVED,
            message=(
                f"You removed your endpoint for {market.symbol}: your {len(cancelled)} open "
                "ask(s) there were cancelled."
            ),
            cancelled_order_ids=cancelled,
        )
    return cancelled


def asks_cancel(*, provider: User, market: Market) -> list[int]:
    """Journal a cancel (through the engine runner) for each of the provider's open asks in
    the market. Returns their ids. Safe to repeat: an order already being cancelled is
    skipped by ``order_cancel`` itself."""
    from orders.models import OPEN_STATUSES, Order
    from orders.services import order_cancel

    cancelled = []
    asks = Order.objects.filter(
        user=provider, market=market, side="sell", status__in=OPEN_STATUSES
    ).order_by("id")
    for order_id in asks.values_list("id", flat=True):
        try:
            order_cancel(user=provider, order_id=order_id)
        except ExchangeError:
            continue  # it ended meanwhile: nothing to cancel
        cancelled.append(order_id)
    return cancelled


# --- health: samples, probes, the dead-man switch ---------------------------------------------
def _outage_close(endpoint: Endpoint, now: datetime) -> None:
    """A DOWN endpoint answers again, or goes: its outage joins the history take-or-pay reads."""
    if endpoint.status == HealthStatus.DOWN and endpoint.down_since is not None:
        EndpointOutage.objects.create(
            provider_id=endpoint.provider_id,
            market_id=endpoint.market_id,
            started_at=endpoint.down_since,
            ended_at=max(now, endpoint.down_since),
        )


def _mark_answering(endpoint: Endpoint, now: datetime) -> None:
    _outage_close(endpoint, now)
    endpoint.status = HealthStatus.HEALTHY
    endpoint.last_checked_at = now
    endpoint.last_success_at = now
    endpoint.failing_since = None
    endpoint.consecutive_failures = 0
    endpoint.last_error = ""
    endpoint.down_since = None


def _event_recovered(endpoint: Endpoint) -> None:
    EndpointEvent.objects.create(
        provider_id=endpoint.provider_id,
        market_id=endpoint.market_id,
        endpoint=endpoint,
        kind=EventKind.RECOVERED,
        message=(
            f"Your endpoint for {endpoint.market.symbol} answers again: you can place asks "
            "there again."
        ),
    )


# One statement: the sample takes its provider and market from the endpoint row, and nothing is
# inserted when the endpoint is gone (removed while the request was being served).
_OUTCOME_INSERT_SQL = """
INSERT INTO delivery_endpoints_healthsample
       (endpoint_id, provider_id, market_id, at, source, ok, first_token_ms,
        output_tokens_per_second)
SELECT id, provider_id, market_id, %s, %s, %s, %s, %s
  FROM delivery_endpoints_endpoint WHERE id = %s
"""


def _tps_clean(value: Decimal | None) -> Decimal | None:
    """A served request's speed as the sample stores it; a value that is not a finite
    non-negative number is dropped (logged), never an error: statistics must not fail the
    caller's settlement."""
    if value is None:
        return None
    try:
        rate = value if isinstance(value, Decimal) else Decimal(str(value))
        if not rate.is_finite() or rate < 0:
            raise ArithmeticError(rate)
    except (ArithmeticError, ValueError):
        logger.warning("output_tokens_per_second %r not recorded", value)
        return None
    return min(rate.quantize(upstream.TPS_STEP), upstream.MAX_TOKENS_PER_SECOND)


def request_outcome_record(
    *,
    endpoint_id: int,
    ok: bool,
    first_token_ms: int | None,
    output_tokens_per_second: Decimal | None,
    at: datetime | None = None,
) -> None:
    """A served request's outcome, for the public statistics (as a probe's). A success also
    brings a FAILING endpoint back to HEALTHY (it answers); a failure does not mark it
    failing (the probes decide that: one buyer's bad request is not an outage)."""
    moment = at or timezone.now()
    values = [
        moment,
        SampleSource.REQUEST.value,
        ok,
        first_token_ms if ok and first_token_ms is not None and first_token_ms >= 0 else None,
        _tps_clean(output_tokens_per_second) if ok else None,
        endpoint_id,
    ]
    try:
        # A savepoint when the caller is in a transaction: a refused insert must not break it.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_OUTCOME_INSERT_SQL, values)
            inserted = cursor.rowcount
    except IntegrityError:
        inserted = 0  # the endpoint was deleted between the read and the commit
    if not inserted:
        logger.warning("outcome for unknown or removed endpoint %s ignored", endpoint_id)
        return
    if ok:
        # Matches no row (and locks nothing) in the usual case: a healthy endpoint.
        Endpoint.objects.filter(id=endpoint_id, status=HealthStatus.FAILING).update(
            status=HealthStatus.HEALTHY,
            failing_since=None,
            consecutive_failures=0,
            last_success_at=moment,
            last_error="",
        )


# Many outcomes in one statement (the gateway's finish hop settles a batch of requests).
_OUTCOMES_INSERT_SQL = """
INSERT INTO delivery_endpoints_healthsample
       (endpoint_id, provider_id, market_id, at, source, ok, first_token_ms,
        output_tokens_per_second)
SELECT e.id, e.provider_id, e.market_id, %s, %s, v.ok, v.first_token_ms, v.tps
  FROM unnest(%s::bigint[], %s::boolean[], %s::integer[], %s::numeric[])
       AS v(endpoint_id, ok, first_token_ms, tps)
  JOIN delivery_endpoints_endpoint e ON e.id = v.endpoint_id
"""
# The same as a statement of its own that commits without waiting for the WAL flush
# (``set_config(…, true)`` lasts to the end of its transaction): samples are not money.
_OUTCOMES_INSERT_QUICK_SQL = (
    _OUTCOMES_INSERT_SQL.rstrip()
    + "\n CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS quick\n"
)


def request_outcomes_record(
    *,
    outcomes: list[tuple[int, bool, int | None, Decimal | None]],
    at: datetime | None = None,
) -> None:
    """``request_outcome_record`` for many served requests at once: (endpoint id, ok, first
    token ms, output tokens/s) each; two statements whatever their number. Outcomes of a
    removed endpoint are dropped."""
    if not outcomes:
        return
    moment = at or timezone.now()
    columns: list[list[object]] = [[], [], [], []]
    for endpoint_id, ok, first_token_ms, rate in outcomes:
        columns[0].append(endpoint_id)
        columns[1].append(ok)
        columns[2].append(
            first_token_ms if ok and first_token_ms is not None and first_token_ms >= 0 else None
        )
        columns[3].append(_tps_clean(rate) if ok else None)
    try:
        if connection.in_atomic_block:
            # a savepoint: a refused insert must not break the caller's transaction
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_OUTCOMES_INSERT_SQL, [moment, SampleSource.REQUEST.value, *columns])
        else:
            # its own transaction, in one round trip
            with connection.cursor() as cursor:
                cursor.execute(
                    _OUTCOMES_INSERT_QUICK_SQL, [moment, SampleSource.REQUEST.value, *columns]
                )
    except IntegrityError:  # an endpoint deleted between the read and the commit: each alone
        for endpoint_id, ok, first_token_ms, rate in outcomes:
            request_outcome_record(
                endpoint_id=endpoint_id,
                ok=ok,
                first_token_ms=first_token_ms,
                output_tokens_per_second=rate,
                at=moment,
            )
        return
    answered = sorted({endpoint_id for endpoint_id, ok, _, _ in outcomes if ok})
    if answered:
        # as one call each: matches no row (and locks nothing) while they are healthy
        Endpoint.objects.filter(id__in=answered, status=HealthStatus.FAILING).update(
            status=HealthStatus.HEALTHY,
            failing_since=None,
            consecutive_failures=0,
            last_success_at=moment,
            last_error="",
        )


async def arequest_outcome_record(
    *,
    endpoint_id: int,
    ok: bool,
    first_token_ms: int | None,
    output_tokens_per_second: Decimal | None,
) -> None:
    """``request_outcome_record`` for async callers (the gateway's event loop)."""
    from asgiref.sync import sync_to_async

    await sync_to_async(request_outcome_record, thread_sensitive=False)(
        endpoint_id=endpoint_id,
        ok=ok,
        first_token_ms=first_token_ms,
        output_tokens_per_second=output_tokens_per_second,
    )


@dataclass(frozen=True, slots=True)
class _Target:
    endpoint_id: int
    base_url: str
    api_key: str
    model_id: str

    def __repr__(self) -> str:  # never the key
        return f"_Target(endpoint_id={self.endpoint_id})"


async def _probe_all(targets: list[_Target], timeout: float) -> list[upstream.ProbeResult]:
    async with egress.upstream_async_client() as client:

        async def one(target: _Target) -> upstream.ProbeResult:
            try:
                async with asyncio.timeout(timeout):
                    return await upstream.probe(
                        client,
                        base_url=target.base_url,
                        api_key=target.api_key,
                        model_id=target.model_id,
                        timeout=timeout,
                    )
            except TimeoutError:
                return upstream.ProbeResult(ok=False, error="timed out")

        return list(await asyncio.gather(*(one(t) for t in targets)))


def probe_result_record(
    *, endpoint_id: int, result: upstream.ProbeResult, now: datetime | None = None
) -> None:
    """Record one probe: a sample, the endpoint's health, and the dead-man switch (asks
    cancelled once it has failed every check for DELIVERY_DEADMAN_SECONDS)."""
    moment = now or timezone.now()
    trip = first_trip = False
    with transaction.atomic(durable=True):
        endpoint = (
            Endpoint.objects.select_for_update()
            .select_related("market")
            .filter(id=endpoint_id)
            .first()
        )
        if endpoint is None:
            return  # deleted meanwhile
        HealthSample.objects.create(
            endpoint=endpoint,
            provider_id=endpoint.provider_id,
            market_id=endpoint.market_id,
            at=moment,
            source=SampleSource.PROBE,
            ok=result.ok,
            first_token_ms=result.first_token_ms,
            output_tokens_per_second=result.output_tokens_per_second,
        )
        if result.ok:
            was_down = endpoint.status == HealthStatus.DOWN
            _mark_answering(endpoint, moment)
            endpoint.save()
            if was_down:
                _event_recovered(endpoint)
            return
        endpoint.last_checked_at = moment
        endpoint.last_failure_at = moment
        endpoint.failing_since = endpoint.failing_since or moment
        endpoint.consecutive_failures += 1
        endpoint.last_error = result.error[:200]
        window = timedelta(seconds=settings.DELIVERY_DEADMAN_SECONDS)
        if endpoint.status == HealthStatus.DOWN:
            trip = True  # sweep again: an ask that raced the switch is cancelled now
        elif moment - endpoint.failing_since >= window:
            endpoint.status = HealthStatus.DOWN
            endpoint.down_since = moment
            trip = True
            first_trip = True
        else:
            endpoint.status = HealthStatus.FAILING
        endpoint.save()
    if not trip:
        return
    # Cancels go through the runner, each in its own transaction (order_cancel), after the
    # DOWN status committed: from then on the ask check refuses new asks, so this sweep (and
    # the next probe's) leaves none behind.
    cancelled = asks_cancel(provider=endpoint.provider, market=endpoint.market)
    if cancelled or first_trip:
        since = endpoint.failing_since.astimezone(UTC)
        EndpointEvent.objects.create(
            provider_id=endpoint.provider_id,
            market_id=endpoint.market_id,
            endpoint=endpoint,
            kind=EventKind.DEADMAN_TRIPPED,
            message=(
                f"Your endpoint for {endpoint.market.symbol} has failed every health check "
                f"since {since:%Y-%m-%d %H:%M:%S} UTC (last: {endpoint.last_error}). "
                f"{len(cancelled)} open ask(s) there were cancelled; new asks are refused "
                "until it answers again."
            ),
            cancelled_order_ids=cancelled,
        )
        logger.warning(
            "dead-man switch: endpoint %s down, %s asks cancelled", endpoint.id, len(cancelled)
        )


def samples_prune(*, now: datetime | None = None) -> int:
    """Delete samples older than the longest window, market by market (the (market, at)
    index serves each delete)."""
    cutoff = (now or timezone.now()) - SAMPLE_RETENTION
    deleted = 0
    for market_id in Market.objects.order_by().values_list("id", flat=True):
        count, _ = HealthSample.objects.filter(market_id=market_id, at__lt=cutoff).delete()
        deleted += count
    return deleted


def endpoints_probe(*, now: datetime | None = None) -> dict[str, int]:
    """Probe every endpoint at once (async, one pooled client), record each result, prune.

    Endpoints that name the same upstream (URL, key and model: a provider's input and output
    markets, typically) share one probe per run: the provider pays for one tiny completion,
    and each endpoint gets its sample. Called by the beat task every
    DELIVERY_PROBE_INTERVAL_SECONDS. Returns how many endpoints were probed and failed, how
    many requests went out, and how many old samples were pruned."""
    targets: dict[tuple[str, str, str], _Target] = {}
    endpoint_target: list[tuple[int, tuple[str, str, str]]] = []
    for endpoint in Endpoint.objects.order_by("id"):
        try:
            key = secret_decrypt(endpoint.api_key_ciphertext)
        except Exception:
            # A key no configured Fernet key opens (dropped too early): an operator's error,
            # not the provider's; no probe, no sample, no dead-man.
            logger.error("endpoint %s: stored API key cannot be decrypted", endpoint.id)
            continue
        same = (endpoint.base_url, key, endpoint.model_id)
        targets.setdefault(same, _Target(endpoint.id, endpoint.base_url, key, endpoint.model_id))
        endpoint_target.append((endpoint.id, same))
    unique = list(targets.values())
    results = (
        asyncio.run(_probe_all(unique, settings.DELIVERY_PROBE_TIMEOUT_SECONDS)) if unique else []
    )
    result_of = dict(zip(targets, results, strict=True))
    failed = 0
    for endpoint_id, same in endpoint_target:
        result = result_of[same]
        failed += not result.ok
        try:
            probe_result_record(endpoint_id=endpoint_id, result=result, now=now)
        except Exception:
            logger.exception("endpoint %s: probe result not recorded", endpoint_id)
    pruned = samples_prune(now=now)
    return {
        "probed": len(endpoint_target),
        "failed": failed,
        "requests": len(unique),
        "pruned": pruned,
    }


def endpoint_keys_rotate() -> int:
    """Re-encrypt every stored upstream key under the first DELIVERY_ENCRYPTION_KEYS key.
    Row by row, each under its lock (a concurrent key change is not overwritten)."""
    rotated = 0
    for endpoint_id in Endpoint.objects.order_by("id").values_list("id", flat=True):
        with transaction.atomic(durable=True):
            endpoint = Endpoint.objects.select_for_update().filter(id=endpoint_id).first()
            if endpoint is None:
                continue
            endpoint.api_key_ciphertext = secret_rotate(endpoint.api_key_ciphertext)
            endpoint.save(update_fields=["api_key_ciphertext", "updated_at"])
            rotated += 1
    return rotated
