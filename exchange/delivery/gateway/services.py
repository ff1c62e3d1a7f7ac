"""The gateway's database side: what a request does before it is forwarded, between attempts,
and once it is done. Each function is one thread hop of the async proxy
(``exchange.delivery.gateway.proxy``): a request that succeeds at once takes two.

Money moves only in the escrow services (``reservation_open`` / ``_settle`` / ``_release``,
through the ledger); this module keeps the generation record and the key's limits.

Exactly once: every attempt's reservation is keyed ``{generation id}.{attempt}``; a failed
attempt is released before the next is opened; the reservation of a request whose gateway
process died is released by ``generations_reap`` (through ``reservations_reap``), which never
touches a settled one, so nothing is charged twice.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import ApiKey, Profile
from exchange.delivery.endpoints.crypto import secret_decrypt
from exchange.delivery.endpoints.models import Endpoint, HealthStatus
from exchange.delivery.endpoints.selectors import Upstream
from exchange.delivery.endpoints.services import request_outcome_record
from exchange.delivery.escrow.models import Reservation, ReservationStatus
from exchange.delivery.escrow.selectors import ModelPair, model_pairs
from exchange.delivery.escrow.services import (
    InsufficientAllocation,
    ReservationClosed,
    Settlement,
    holdings_get,
    reservation_open,
    reservation_release,
    reservation_settle,
    reservations_reap,
)
from exchange.delivery.gateway import limits, slots
from exchange.delivery.gateway.metering import (
    USAGE_DISPUTED,
    ServiceLevel,
    SlaOutcome,
    Usage,
    estimate_prompt_tokens,
    output_tokens_per_second,
    reservation_size,
    sla_evaluate,
)
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.delivery.gateway.protocol import ChatRequest, GatewayError
from exchange.delivery.gateway.routing import Candidate, route
from exchange.markets.currencies import CURRENCY_DECIMALS

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Attempt:
    number: int
    provider_id: int
    provider_name: str
    reservation_id: int
    upstream: Upstream


@dataclass(slots=True)
class Plan:
    """A request's routing and metering facts, carried between its hops."""

    generation_pk: int
    public_id: str
    user: Any
    api_key_id: int | None
    pair: ModelPair
    stream: bool
    prompt_estimate: int
    needed: tuple[int, int]
    level: ServiceLevel
    default_max_tokens: int
    decimals: int
    remaining: list[Candidate]
    attempts: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Finished:
    usage: Usage  # as charged (clipped to the reservation)
    settlement: Settlement | None  # None: the reservation was gone (reaped)
    sla: SlaOutcome
    output_tokens_per_second: Decimal | None
    status: str


@contextmanager
def records_transaction() -> Iterator[None]:
    """A transaction for records that are not money (generations, provider statistics) that
    commits without waiting for the WAL flush: a crash may lose its last few milliseconds of
    them, never a reservation or a ledger entry (those commit durably in the escrow services),
    and each request is spared one or two fsyncs."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def generation_id_new() -> str:
    return f"gen-{secrets.token_hex(12)}"


# Markets and providers' names change rarely; a request reads them from this process's copy,
# at most GATEWAY_CACHE_SECONDS old (each saves a query on the way to the first token).
_pairs: tuple[float, dict[str, ModelPair]] = (-1e9, {})
_names: dict[int, tuple[float, str]] = {}


def _model_pair(model_id: str) -> ModelPair | None:
    global _pairs
    if time.monotonic() - _pairs[0] > settings.GATEWAY_CACHE_SECONDS:
        _pairs = (time.monotonic(), {pair.model_id: pair for pair in model_pairs()})
    return _pairs[1].get(model_id)


def _provider_names(provider_ids: list[int]) -> dict[int, str]:
    moment = time.monotonic()
    stale = [
        pid
        for pid in provider_ids
        if moment - _names.get(pid, (-1e9, ""))[0] > settings.GATEWAY_CACHE_SECONDS
    ]
    if stale:
        found = dict(
            Profile.objects.filter(user_id__in=stale).values_list("user_id", "display_name")
        )
        for pid in stale:
            _names[pid] = (moment, slugify(found.get(pid) or "") or f"provider-{pid}")
    return {pid: _names[pid][1] for pid in provider_ids}


# The healthy endpoints of a model's markets, per provider, read once for both routing
# questions (who is healthy, which endpoint of theirs) and kept GATEWAY_CACHE_SECONDS: an
# endpoint that went down meanwhile fails its attempt and the next provider is tried, as a
# provider failing between two probes does.
_healthy: dict[tuple[int, ...], tuple[float, dict[int, list[Endpoint]]]] = {}


def _healthy_endpoints(pair: ModelPair) -> dict[int, list[Endpoint]]:
    markets = tuple(market.id for market in pair.markets)
    moment = time.monotonic()
    cached = _healthy.get(markets)
    if cached is None or moment - cached[0] > settings.GATEWAY_CACHE_SECONDS:
        found: dict[int, list[Endpoint]] = {}
        for endpoint in Endpoint.objects.filter(
            market_id__in=markets, status=HealthStatus.HEALTHY
        ).order_by():
            found.setdefault(endpoint.provider_id, []).append(endpoint)
        cached = (moment, found)
        _healthy[markets] = cached
    return cached[1]


def _endpoint_for(pair: ModelPair, provider_id: int) -> Upstream | None:
    """``endpoints.selectors.endpoint_for`` from the cached read: the output market's endpoint
    when the provider has both (completion tokens are what a provider serves for a living)."""
    endpoints = _healthy_endpoints(pair).get(provider_id)
    if not endpoints:
        return None
    output = pair.output_market.id
    endpoint = min(endpoints, key=lambda e: (e.market_id != output, e.market_id))
    return Upstream(
        endpoint_id=endpoint.id,
        provider_id=endpoint.provider_id,
        base_url=endpoint.base_url,
        api_key=secret_decrypt(endpoint.api_key_ciphertext),  # InvalidToken: the caller's
        model_id=endpoint.model_id,
        concurrency_limit=endpoint.concurrency_limit,
    )


def _provider_stats(pair: ModelPair, sort: str | None) -> dict[int, dict[str, Any]]:
    """Public per-provider statistics, only when the buyer sorts by them (one heavier query)."""
    if sort not in ("latency", "throughput"):
        return {}
    from exchange.delivery.endpoints.selectors import market_provider_stats

    return {row["provider_id"]: row for row in market_provider_stats(market=pair.output_market)}


def request_begin(
    *, user: Any, api_key: ApiKey | None, request: ChatRequest, public_id: str
) -> tuple[Plan, Attempt]:
    """Hop 1: check the model and the key's limits, pick the providers, write the generation
    and reserve the worst case with the first provider that takes it. Raises ``GatewayError``
    (nothing reserved, or everything released)."""
    now = timezone.now()
    pair = _model_pair(request.model.lower())
    if pair is None:
        raise GatewayError(
            404,
            "model_not_found",
            f"The model {request.model!r} does not exist; GET /v1/models lists yours.",
            param="model",
        )
    limits.model_check(api_key=api_key, model_id=pair.model_id)
    limits.rate_check(api_key=api_key, now=now)
    prompt_estimate = estimate_prompt_tokens(
        request.messages,
        tools=request.body.get("tools") or request.body.get("functions"),
        response_format=request.body.get("response_format"),
    )
    default_max_tokens = pair.output_market.default_max_tokens
    needed = reservation_size(
        prompt_estimate=prompt_estimate,
        max_tokens=request.max_tokens,
        default_max_tokens=default_max_tokens,
    )
    holdings = holdings_get(user=user, pair=pair)
    names = _provider_names([h.provider_id for h in holdings])
    stats = _provider_stats(pair, request.provider.sort)
    candidates = [
        Candidate(
            provider_id=h.provider_id,
            name=names[h.provider_id],
            expires_at=h.earliest_expiry,
            input_tokens=h.input_tokens,
            output_tokens=h.output_tokens,
            price=(h.input_price or 0) + (h.output_price or 0)
            if h.input_price is not None or h.output_price is not None
            else None,
            latency_ms=stats.get(h.provider_id, {}).get("first_token_ms", {}).get("p50"),
            throughput=stats.get(h.provider_id, {}).get("output_tokens_per_second", {}).get("p50"),
        )
        for h in holdings
    ]
    healthy = set(_healthy_endpoints(pair)) if candidates else set()
    ranked = route(
        candidates,
        healthy=healthy,
        preferences=request.provider,
        needed=needed,
        model=pair.model_id,
    )
    budgeted = api_key is not None and bool(api_key.tokens_per_day or api_key.tokens_per_month)
    # with a budget, one request of this key at a time passes here: the budget sum and the new
    # row that counts against it commit together; without one, the insert is its own statement
    with transaction.atomic(durable=True) if budgeted else records_transaction():
        if budgeted and api_key is not None:
            locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
            limits.budget_check(api_key=locked, tokens=needed[0] + needed[1], now=now)
        generation = Generation.objects.create(
            public_id=public_id,
            buyer=user,
            api_key=api_key,
            model_id=pair.model_id,
            input_market=pair.input_market,
            output_market=pair.output_market,
            stream=request.stream,
            reserved_input_tokens=needed[0],
            reserved_output_tokens=needed[1],
            currency=pair.output_market.quote_currency,
            created_at=now,
        )
    plan = Plan(
        generation_pk=generation.pk,
        public_id=public_id,
        user=user,
        api_key_id=api_key.pk if api_key is not None else None,
        pair=pair,
        stream=request.stream,
        prompt_estimate=prompt_estimate,
        needed=needed,
        level=ServiceLevel(
            pair.output_market.max_first_token_latency_ms, pair.output_market.min_throughput_tps
        ),
        default_max_tokens=default_max_tokens,
        decimals=CURRENCY_DECIMALS[pair.output_market.quote_currency],
        remaining=ranked,
    )
    try:
        attempt = _attempt_open(plan)
    except Exception:
        # our own failure (the database, a key that will not decrypt): the generation must not
        # stay in progress until the reaper comes
        Generation.objects.filter(pk=plan.generation_pk).update(
            status=GenerationStatus.FAILED, error_code="gateway_error", finished_at=timezone.now()
        )
        raise
    if attempt is None:
        raise _attempts_exhausted(plan)
    return plan, attempt


def _attempt_open(plan: Plan) -> Attempt | None:
    """Reserve with the next provider that has a healthy endpoint and enough lots."""
    while plan.remaining:
        candidate = plan.remaining.pop(0)
        try:
            upstream = _endpoint_for(plan.pair, candidate.provider_id)
        except InvalidToken:
            # its key was encrypted with a key no longer in DELIVERY_ENCRYPTION_KEYS: skip it
            logger.error("endpoint key of provider %s does not decrypt", candidate.provider_id)
            upstream = None
        if upstream is None:
            plan.failures.append("unhealthy")
            continue
        # the endpoint's concurrency limit, across all gateway processes (one Redis call)
        slot = f"{plan.public_id}.{plan.attempts + 1}"
        if not slots.take(
            endpoint_id=upstream.endpoint_id, slot=slot, limit=upstream.concurrency_limit
        ):
            plan.failures.append("busy")
            continue
        plan.attempts += 1
        try:
            reservation = reservation_open(
                user=plan.user,
                pair=plan.pair,
                provider_id=candidate.provider_id,
                input_tokens=plan.needed[0],
                output_tokens=plan.needed[1],
                key=slot,
            )
        except InsufficientAllocation:
            # another request of this buyer took the lots since holdings_get read them
            slots.give_back(endpoint_id=upstream.endpoint_id, slot=slot)
            plan.failures.append("insufficient_allocation")
            continue
        except BaseException:
            slots.give_back(endpoint_id=upstream.endpoint_id, slot=slot)
            raise
        # the generation learns its provider and reservation when it finishes (one write
        # less on the way to the first token); a crashed one is found by the reservation key
        return Attempt(
            plan.attempts, candidate.provider_id, candidate.name, reservation.id, upstream
        )
    return None


def _slot_give_back(plan: Plan, attempt: Attempt) -> None:
    slots.give_back(
        endpoint_id=attempt.upstream.endpoint_id, slot=f"{plan.public_id}.{attempt.number}"
    )


def _attempts_exhausted(plan: Plan) -> GatewayError:
    """Every provider failed before its first token (or could not be reserved): the generation
    is marked failed, nothing was charged."""
    if plan.failures and all(reason == "insufficient_allocation" for reason in plan.failures):
        error = GatewayError(
            402,
            "insufficient_allocation",
            f"Not enough allocation for {plan.pair.model_id}: this request may need "
            f"{plan.needed[0]} input and {plan.needed[1]} output tokens from one provider "
            "(other requests of yours hold the rest now).",
            details={"needed": {"input_tokens": plan.needed[0], "output_tokens": plan.needed[1]}},
        )
    else:
        error = GatewayError(
            503,
            "no_provider_available",
            f"No provider could serve {plan.pair.model_id} now (tried {plan.attempts}); "
            "nothing was charged. Retry later.",
            details={"attempts": plan.attempts, "failures": plan.failures},
            retry_after=5,
        )
    Generation.objects.filter(pk=plan.generation_pk).update(
        status=GenerationStatus.FAILED,
        attempts=plan.attempts,
        error_code=error.code,
        finished_at=timezone.now(),
    )
    return error


def attempt_failed(
    *, plan: Plan, attempt: Attempt, reason: str, provider_fault: bool = True
) -> Attempt:
    """Between attempts (one hop): give the failed attempt's reservation back, record the
    failure in the provider's statistics (``provider_fault``: not when the buyer's own request
    was refused), and reserve with the next provider. Raises the final ``GatewayError`` when
    none is left."""
    reservation_release(reservation_id=attempt.reservation_id)
    _slot_give_back(plan, attempt)
    plan.failures.append(reason)
    if provider_fault:
        request_outcome_record(
            endpoint_id=attempt.upstream.endpoint_id,
            ok=False,
            first_token_ms=None,
            output_tokens_per_second=None,
        )
    following = _attempt_open(plan)
    if following is None:
        raise _attempts_exhausted(plan)
    return following


def request_refused_upstream(*, plan: Plan, attempt: Attempt, code: str) -> None:
    """The provider refused the buyer's request as invalid (400): nothing charged."""
    reservation_release(reservation_id=attempt.reservation_id)
    _slot_give_back(plan, attempt)
    Generation.objects.filter(pk=plan.generation_pk).update(
        status=GenerationStatus.FAILED,
        provider_id=attempt.provider_id,
        endpoint_id=attempt.upstream.endpoint_id,
        attempts=plan.attempts,
        error_code=code,
        finished_at=timezone.now(),
    )


def request_aborted(*, plan: Plan, attempt: Attempt) -> None:
    """The gateway itself failed mid-request: the reservation goes back whole if it is still
    open (a settled one stays settled), and a generation still in progress is marked failed."""
    _slot_give_back(plan, attempt)
    reservation_release(reservation_id=attempt.reservation_id)
    Generation.objects.filter(pk=plan.generation_pk, status=GenerationStatus.IN_PROGRESS).update(
        status=GenerationStatus.FAILED,
        provider_id=attempt.provider_id,
        attempts=plan.attempts,
        error_code="gateway_error",
        finished_at=timezone.now(),
    )


def request_finish(
    *,
    plan: Plan,
    attempt: Attempt,
    usage: Usage,
    first_token_ms: int | None,
    last_token_ms: int | None,
    total_ms: int,
    finish_reason: str | None,
    broken: bool,
    cancelled: bool,
    time_limited: bool = False,
) -> Finished:
    """The last hop: judge the service level, settle the reservation (tokens drawn, SLA
    credit), complete the generation, feed the provider's statistics and the key's minute."""
    # the service level and speed from our own count of what was streamed: a provider's
    # reported count must not make it look faster than it was
    counted = (
        usage.counted_completion_tokens
        if usage.counted_completion_tokens is not None
        else usage.completion_tokens
    )
    sla = sla_evaluate(
        level=plan.level,
        streamed=plan.stream,
        first_token_ms=first_token_ms,
        last_token_ms=last_token_ms,
        total_ms=total_ms,
        completion_tokens=counted,
        broken=broken,
    )
    rate = output_tokens_per_second(
        completion_tokens=counted,
        first_token_ms=first_token_ms,
        last_token_ms=last_token_ms,
    )
    status = (
        GenerationStatus.BROKEN
        if broken
        else GenerationStatus.CANCELLED
        if cancelled
        else GenerationStatus.TIME_LIMITED
        if time_limited
        else GenerationStatus.COMPLETED
    )
    _slot_give_back(plan, attempt)  # the upstream call is over
    settlement: Settlement | None
    try:
        settlement = reservation_settle(
            reservation_id=attempt.reservation_id,
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            sla_missed=not sla.met,
        )
    except ReservationClosed:
        # reaped while still streaming (longer than GATEWAY_MAX_REQUEST_SECONDS): released,
        # nothing charged; say so rather than charge twice
        logger.error("generation %s: reservation released before settling", plan.public_id)
        settlement = None
        status = GenerationStatus.INTERRUPTED
    if usage.source == USAGE_DISPUTED:
        logger.warning(
            "generation %s: provider %s reported more usage than was streamed; billed %s/%s "
            "(our count of the completion: %s)",
            plan.public_id,
            attempt.provider_id,
            usage.prompt_tokens,
            usage.completion_tokens,
            counted,
        )
    if settlement is not None:
        if settlement.clipped_input_tokens or settlement.clipped_output_tokens:
            logger.warning(
                "generation %s: provider usage beyond the reservation not charged (%s, %s)",
                plan.public_id,
                settlement.clipped_input_tokens,
                settlement.clipped_output_tokens,
            )
        charged = Usage(settlement.input_tokens, settlement.output_tokens, usage.source)
    else:
        charged = Usage(0, 0, usage.source)
    now = timezone.now()
    # The money is settled: from here nothing may fail the request (the buyer must get its
    # usage, and the record must show the charge), so the records are written defensively.
    try:
        with records_transaction():
            _finish_records(plan, attempt, usage, charged, settlement, sla, rate, status, now,
                            first_token_ms, total_ms, finish_reason, broken)  # fmt: skip
    except DatabaseError:
        logger.exception("generation %s: record after settling failed", plan.public_id)
        _finish_records_minimal(plan, attempt, charged, settlement, status, now)
    try:
        limits.tokens_record(api_key_id=plan.api_key_id, tokens=charged.total_tokens, now=now)
    except Exception:
        logger.exception("generation %s: the key's token minute not recorded", plan.public_id)
    return Finished(charged, settlement, sla, rate, status)


def _finish_records_minimal(
    plan: Plan,
    attempt: Attempt,
    charged: Usage,
    settlement: Settlement | None,
    status: str,
    now: Any,
) -> None:
    """The settled charge on the generation, nothing the provider said (the fallback when the
    full record failed); still failing, the reaper closes it from its settled reservation."""
    try:
        Generation.objects.filter(pk=plan.generation_pk).update(
            reservation_id=attempt.reservation_id,
            provider_id=attempt.provider_id,
            endpoint_id=attempt.upstream.endpoint_id,
            attempts=plan.attempts,
            prompt_tokens=charged.prompt_tokens,
            completion_tokens=charged.completion_tokens,
            input_cost_units=settlement.input_cost_units if settlement else 0,
            output_cost_units=settlement.output_cost_units if settlement else 0,
            credit_units=settlement.credit_units if settlement else 0,
            status=status,
            finished_at=now,
        )
    except DatabaseError:
        logger.exception("generation %s: minimal record failed too", plan.public_id)


def _finish_records(
    plan: Plan,
    attempt: Attempt,
    usage: Usage,
    charged: Usage,
    settlement: Settlement | None,
    sla: SlaOutcome,
    rate: Decimal | None,
    status: str,
    now: Any,
    first_token_ms: int | None,
    total_ms: int,
    finish_reason: str | None,
    broken: bool,
) -> None:
    Generation.objects.filter(pk=plan.generation_pk).update(
        reservation_id=attempt.reservation_id,
        provider_id=attempt.provider_id,
        endpoint_id=attempt.upstream.endpoint_id,
        attempts=plan.attempts,
        prompt_tokens=charged.prompt_tokens,
        completion_tokens=charged.completion_tokens,
        usage_source=usage.source,
        input_cost_units=settlement.input_cost_units if settlement else 0,
        output_cost_units=settlement.output_cost_units if settlement else 0,
        credit_units=settlement.credit_units if settlement else 0,
        first_token_ms=first_token_ms,
        total_ms=total_ms,
        output_tokens_per_second=rate,
        status=status,
        finish_reason=(finish_reason or "")[:32],  # the column's width (metering cleans it)
        sla_met=sla.met,
        sla_reason=sla.reason,
        error_code="provider_broke_stream"
        if broken
        else "request_time_limit"
        if status == GenerationStatus.TIME_LIMITED
        else "",
        finished_at=now,
    )
    request_outcome_record(
        endpoint_id=attempt.upstream.endpoint_id,
        ok=not broken,
        first_token_ms=first_token_ms,
        output_tokens_per_second=rate,
    )


def generations_reap(*, older_than: timedelta) -> int:
    """After a gateway process died: release its open reservations (``reservations_reap``:
    nothing charged; a settled one stays settled) and close its generations as interrupted,
    with what their reservation was charged, if it was settled. Idempotent. Returns how many
    generations were closed."""
    reservations_reap(older_than=older_than)
    cutoff = timezone.now() - older_than
    stale = list(
        Generation.objects.filter(status=GenerationStatus.IN_PROGRESS, created_at__lt=cutoff)
        .order_by("id")
        .values_list("id", "public_id")
    )
    closed = 0
    for pk, public_id in stale:
        with transaction.atomic(durable=True):
            generation = (
                Generation.objects.select_for_update()
                .filter(pk=pk, status=GenerationStatus.IN_PROGRESS)
                .first()
            )
            if generation is None:
                continue
            settled = (
                Reservation.objects.filter(
                    key__startswith=f"{public_id}.", status=ReservationStatus.SETTLED
                )
                .order_by("id")
                .first()
            )
            if settled is not None:
                generation.reservation_id = settled.id
                generation.prompt_tokens = settled.used_input_tokens
                generation.completion_tokens = settled.used_output_tokens
                generation.input_cost_units = settled.input_cost_units
                generation.output_cost_units = settled.output_cost_units
                generation.credit_units = settled.credit_units
                generation.sla_met = not settled.sla_missed
            generation.status = GenerationStatus.INTERRUPTED
            generation.error_code = "gateway_interrupted"
            generation.finished_at = timezone.now()
            generation.save()
            closed += 1
    return closed
