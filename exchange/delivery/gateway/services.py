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
from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import Profile
from exchange.delivery.endpoints.crypto import secret_decrypt
from exchange.delivery.endpoints.models import Endpoint, HealthStatus
from exchange.delivery.endpoints.selectors import Upstream
from exchange.delivery.endpoints.services import request_outcome_record
from exchange.delivery.escrow.models import Reservation, ReservationStatus
from exchange.delivery.escrow.selectors import ModelPair, model_pairs
from exchange.delivery.escrow.services import (
    InsufficientAllocation,
    OpenRequest,
    Settlement,
    reservation_release,
    reservations_open_many,
    reservations_reap,
)
from exchange.delivery.gateway import slots
from exchange.delivery.gateway.metering import (
    ServiceLevel,
    SlaOutcome,
    Usage,
)
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.delivery.gateway.protocol import GatewayError
from exchange.delivery.gateway.routing import Candidate

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
    # the key has a tokens-per-minute limit: its settled tokens are counted (``limits``)
    counts_tokens: bool = False
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


def _attempt_candidate(plan: Plan) -> tuple[Candidate, Upstream] | None:
    """The next provider with a healthy endpoint, or None when none is left."""
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
        return candidate, upstream
    return None


def attempts_open(plans: list[Plan]) -> list[Attempt | BaseException | None]:
    """Reserve each plan's worst case with its next provider that has a healthy endpoint,
    enough lots and a free concurrency slot: per round, every plan's reservation in one escrow
    group (``reservations_open_many``), then the slots of those reserved in one Redis round
    trip. A plan refused (not enough allocation; a busy endpoint: its reservation released)
    tries its next provider in the next round. Reserving before taking the slot keeps a
    request that the buyer's allocation cannot cover from holding a slot meanwhile (in a batch,
    it would make others look busy). Per plan: its Attempt, None (no provider left) or the
    exception it alone met."""
    results: list[Attempt | BaseException | None] = [None] * len(plans)
    try:
        _attempt_rounds(plans, results)
    except BaseException:
        # a round failed as a whole (the database, Redis): the plans an earlier round already
        # granted fail with it, so give back what they hold — nothing is forwarded for them
        _attempts_undo(plans, results)
        raise
    return results


def _attempts_undo(plans: list[Plan], results: list[Attempt | BaseException | None]) -> None:
    for plan, attempt in zip(plans, results, strict=True):
        if not isinstance(attempt, Attempt):
            continue
        try:
            reservation_release(reservation_id=attempt.reservation_id)
        except Exception:  # left open: the reaper releases it (DELIVERY_RESERVATION_TIMEOUT)
            logger.exception("reservation %s not released", attempt.reservation_id)
        try:
            _slot_give_back(plan, attempt)
        except Exception:  # a lost slot expires by itself
            logger.exception("slot of %s not given back", plan.public_id)


def _attempt_rounds(plans: list[Plan], results: list[Attempt | BaseException | None]) -> None:
    waiting = list(range(len(plans)))
    while waiting:
        asks: list[tuple[int, Candidate, Upstream, str]] = []
        for number in waiting:
            plan = plans[number]
            try:
                chosen = _attempt_candidate(plan)
            except Exception as error:
                results[number] = error
                continue
            if chosen is not None:
                # every attempt its own key (a released reservation keeps its key)
                plan.attempts += 1
                asks.append((number, *chosen, f"{plan.public_id}.{plan.attempts}"))
        if not asks:
            break
        outcomes = reservations_open_many(
            requests=[
                OpenRequest(
                    plans[number].user,
                    plans[number].pair,
                    candidate.provider_id,
                    plans[number].needed[0],
                    plans[number].needed[1],
                    slot,
                )
                for number, candidate, _, slot in asks
            ]
        )
        waiting = []
        reserved: list[tuple[int, Candidate, Upstream, str, int]] = []
        for (number, candidate, upstream, slot), outcome in zip(asks, outcomes, strict=True):
            if isinstance(outcome, InsufficientAllocation):
                # another request of this buyer took the lots since holdings_get read them
                plans[number].failures.append("insufficient_allocation")
                waiting.append(number)
            elif isinstance(outcome, BaseException):
                results[number] = outcome
            else:
                reserved.append((number, candidate, upstream, slot, outcome.id))
        if not reserved:
            continue
        try:
            # the endpoints' concurrency limits, across all gateway processes
            granted = slots.take_many(
                asks=[(u.endpoint_id, slot, u.concurrency_limit) for _, _, u, slot, _ in reserved]
            )
        except BaseException:
            for _, _, _, _, reservation_id in reserved:
                reservation_release(reservation_id=reservation_id)
            raise
        for (number, candidate, upstream, _, reservation_id), taken in zip(
            reserved, granted, strict=True
        ):
            plan = plans[number]
            if not taken:
                reservation_release(reservation_id=reservation_id)  # nothing charged
                plan.failures.append("busy")
                waiting.append(number)
                continue
            # the generation learns its provider and reservation when it finishes (one write
            # less on the way to the first token); a crashed one is found by the reservation key
            results[number] = Attempt(
                plan.attempts, candidate.provider_id, candidate.name, reservation_id, upstream
            )
        waiting.sort()


def _attempt_open(plan: Plan) -> Attempt | None:
    """Reserve with the next provider that has a healthy endpoint and enough lots."""
    (outcome,) = attempts_open([plan])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _slot_give_back(plan: Plan, attempt: Attempt) -> None:
    slots.give_back(
        endpoint_id=attempt.upstream.endpoint_id, slot=f"{plan.public_id}.{attempt.number}"
    )


def attempts_exhausted_error(plan: Plan) -> GatewayError:
    """The answer when every provider failed before its first token or could not be reserved
    (nothing was charged): 402 when only the allocation was short, else 503."""
    if plan.failures and all(reason == "insufficient_allocation" for reason in plan.failures):
        return GatewayError(
            402,
            "insufficient_allocation",
            f"Not enough allocation for {plan.pair.model_id}: this request may need "
            f"{plan.needed[0]} input and {plan.needed[1]} output tokens from one provider "
            "(other requests of yours hold the rest now).",
            details={"needed": {"input_tokens": plan.needed[0], "output_tokens": plan.needed[1]}},
        )
    return GatewayError(
        503,
        "no_provider_available",
        f"No provider could serve {plan.pair.model_id} now (tried {plan.attempts}); "
        "nothing was charged. Retry later.",
        details={"attempts": plan.attempts, "failures": plan.failures},
        retry_after=5,
    )


def generations_failed(failed: list[tuple[Plan, str]]) -> None:
    """Mark generations failed, each with its error code (one statement per code and number
    of attempts: a batch's refusals are written together)."""
    groups: dict[tuple[str, int], list[int]] = {}
    for plan, code in failed:
        groups.setdefault((code, plan.attempts), []).append(plan.generation_pk)
    now = timezone.now()
    for (code, attempts), ids in groups.items():
        Generation.objects.filter(pk__in=ids).update(
            status=GenerationStatus.FAILED, attempts=attempts, error_code=code, finished_at=now
        )


def _attempts_exhausted(plan: Plan) -> GatewayError:
    """Every provider failed before its first token (or could not be reserved): the generation
    is marked failed, nothing was charged."""
    error = attempts_exhausted_error(plan)
    generations_failed([(plan, error.code)])
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
