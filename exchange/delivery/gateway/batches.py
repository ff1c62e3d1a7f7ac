"""The two database hops of every gateway request, done for a batch of requests at once.

The proxy's event loop queues requests' begins and finishes (``hops.Batcher``); one thread hop
takes every request queued meanwhile, and each request is answered as if alone: its own plan
and attempt, its own settlement, or the exception it alone met (``GatewayError`` with nothing
reserved, a database error for its own row, …). What a batch shares is the database work:

- begin (``requests_begin``): per request, authentication, the key's limits, the holdings
  (one query), routing; then the generation rows of the whole batch in ONE insert (a key with
  a token budget: its own transaction holding the key's row, as before), and the reservations
  of the whole batch in ONE escrow group (``reservations_open_many``: one durable transaction;
  a request refused for want of allocation tries its next provider in the next round).
- finish (``requests_finish``): the service level per request, the settlements of the whole
  batch in ONE escrow group (``reservations_settle_many``), then the generation rows (one
  ``UPDATE … FROM unnest``) and the providers' statistics samples (one insert) in one records
  transaction.

Guarantees, unchanged from one request per hop: a reservation commits (durably) before its
request is forwarded (the begin hop returns after the group's commit); each reservation is
settled or released exactly once (the escrow services lock the reservation rows and act only
on open ones); a failed attempt is released whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from accounts.models import ApiKey
from exchange.db import array_param, server_bound_cursor
from exchange.delivery.endpoints.services import request_outcomes_record
from exchange.delivery.escrow.selectors import ModelPair
from exchange.delivery.escrow.services import (
    ProviderHolding,
    ReservationClosed,
    Settlement,
    SettleRequest,
    holdings_get_many,
    reservations_settle_many,
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
from exchange.delivery.gateway.services import (
    Attempt,
    Finished,
    Plan,
    _healthy_endpoints,
    _model_pair,
    _provider_names,
    _provider_stats,
    attempts_exhausted_error,
    attempts_open,
    generations_failed,
    records_transaction,
)
from exchange.markets.currencies import CURRENCY_DECIMALS

logger = logging.getLogger(__name__)


# --- begin ---------------------------------------------------------------------------------------
class BeginItem(NamedTuple):
    """One request's first hop: ``principal()`` authenticates it (in the database thread) and
    returns (user, API key or None for a browser session)."""

    principal: Callable[[], tuple[Any, ApiKey | None]]
    request: ChatRequest
    public_id: str


@dataclass(slots=True)
class _Prepared:
    user: Any
    api_key: ApiKey | None
    pair: ModelPair
    prompt_estimate: int
    needed: tuple[int, int]
    ranked: list[Candidate]
    budgeted: bool


def _check(*, user: Any, api_key: ApiKey | None, request: ChatRequest, now: datetime) -> _Prepared:
    """Check the model and the key's limits, and size the reservation; ``GatewayError`` with
    nothing written (bar the key's minute counter). The providers are ranked later."""
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
    needed = reservation_size(
        prompt_estimate=prompt_estimate,
        max_tokens=request.max_tokens,
        default_max_tokens=pair.output_market.default_max_tokens,
    )
    budgeted = api_key is not None and bool(api_key.tokens_per_day or api_key.tokens_per_month)
    return _Prepared(user, api_key, pair, prompt_estimate, needed, [], budgeted)


def _rank(ready: _Prepared, request: ChatRequest, holdings: list[ProviderHolding]) -> None:
    """The providers the buyer holds lots from, healthy ones, in the order to try them."""
    pair = ready.pair
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
    ready.ranked = route(
        candidates,
        healthy=healthy,
        preferences=request.provider,
        needed=ready.needed,
        model=pair.model_id,
    )


def _prepare(items: list[BeginItem], outcomes: list[Any], now: datetime) -> dict[int, _Prepared]:
    """Authenticate, check and rank each request; the holdings of all in one query. A request
    refused here gets its exception in ``outcomes``."""
    prepared: dict[int, _Prepared] = {}
    for number, item in enumerate(items):
        try:
            user, api_key = item.principal()
            prepared[number] = _check(user=user, api_key=api_key, request=item.request, now=now)
        except Exception as error:
            outcomes[number] = error
    if not prepared:
        return prepared
    numbers = list(prepared)
    held = holdings_get_many(askers=[(prepared[n].user, prepared[n].pair) for n in numbers])
    for number, holdings in zip(numbers, held, strict=True):
        try:
            _rank(prepared[number], items[number].request, holdings)
        except Exception as error:
            outcomes[number] = error
            del prepared[number]
    return prepared


def _generation(item: BeginItem, prepared: _Prepared, now: datetime) -> Generation:
    pair, needed = prepared.pair, prepared.needed
    return Generation(
        public_id=item.public_id,
        buyer=prepared.user,
        api_key=prepared.api_key,
        model_id=pair.model_id,
        input_market=pair.input_market,
        output_market=pair.output_market,
        stream=item.request.stream,
        reserved_input_tokens=needed[0],
        reserved_output_tokens=needed[1],
        currency=pair.output_market.quote_currency,
        created_at=now,
    )


# Every column of a generation but its id, in the model's order.
_GENERATION_FIELDS = [field for field in Generation._meta.concrete_fields if not field.primary_key]


def _generations_insert(rows: list[Generation]) -> list[int]:
    """Insert ``rows`` in ONE round trip; their ids, in order. Outside a transaction the
    statement is its own, and ``set_config(…, true)`` (which lasts to the end of that
    transaction) lets it commit without waiting for the WAL flush, as ``records_transaction``
    does for records that are not money — but in one round trip instead of four (BEGIN, SET,
    INSERT, COMMIT: on a loaded machine each waits for a CPU slice of both sides)."""
    if connection.in_atomic_block:  # the caller's transaction must keep its own commit rule
        with records_transaction():
            Generation.objects.bulk_create(rows)
        return [row.pk for row in rows]
    quote = connection.ops.quote_name
    names = ", ".join(quote(field.column) for field in _GENERATION_FIELDS)
    arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in _GENERATION_FIELDS)
    # identifiers from the model's own fields (quoted); every value is a bound parameter
    sql = (
        f"INSERT INTO {quote(Generation._meta.db_table)} ({names}) "  # noqa: S608  # nosec B608
        f"SELECT {names} FROM unnest({arrays}) WITH ORDINALITY AS v({names}, position) "
        "CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS quick "
        "ORDER BY position RETURNING id"
    )
    columns = [
        [field.get_db_prep_save(getattr(row, field.attname), connection) for row in rows]
        for field in _GENERATION_FIELDS
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, columns)
        ids = [row[0] for row in cursor.fetchall()]
    for row, pk in zip(rows, ids, strict=True):
        row.pk = pk
    return ids


def _generations_write(
    items: list[BeginItem], prepared: dict[int, _Prepared], now: datetime
) -> dict[int, int | BaseException]:
    """The generation rows: one insert for the batch; a key with a budget checks it and writes
    its row in one transaction holding the key's row lock (one request of that key at a time
    passes there: the budget sum and the row that counts against it commit together)."""
    written: dict[int, int | BaseException] = {}
    plain = [number for number, ready in prepared.items() if not ready.budgeted]
    if plain:
        rows = [_generation(items[number], prepared[number], now) for number in plain]
        try:
            ids = _generations_insert(rows)
            written.update(zip(plain, ids, strict=True))
        except DatabaseError:
            # one bad row (a duplicate id cannot happen: ids are random) must not fail the
            # others: each alone
            for number, row in zip(plain, rows, strict=True):
                try:
                    with records_transaction():
                        row.pk = None
                        row.save(force_insert=True)
                    written[number] = row.pk
                except DatabaseError as error:
                    written[number] = error
    for number, ready in prepared.items():
        if not ready.budgeted:
            continue
        try:
            with transaction.atomic(durable=True):
                assert ready.api_key is not None
                locked = ApiKey.objects.select_for_update().get(pk=ready.api_key.pk)
                limits.budget_check(
                    api_key=locked, tokens=ready.needed[0] + ready.needed[1], now=now
                )
                row = _generation(items[number], ready, now)
                row.save(force_insert=True)
            written[number] = row.pk
        except Exception as error:
            written[number] = error
    return written


def requests_begin(items: list[BeginItem]) -> list[tuple[Plan, Attempt] | BaseException]:
    """Hop 1 of a batch: per request, check the model and the key's limits, pick the
    providers, write the generation and reserve the worst case with the first provider that
    takes it. Per request: (plan, attempt), or the exception to answer it with (a
    ``GatewayError``: nothing reserved, or everything released)."""
    now = timezone.now()
    outcomes: list[Any] = [None] * len(items)
    prepared = _prepare(items, outcomes, now)
    plans: dict[int, Plan] = {}
    for number, written in _generations_write(items, prepared, now).items():
        if isinstance(written, BaseException):
            outcomes[number] = written
            continue
        ready, pair = prepared[number], prepared[number].pair
        plans[number] = Plan(
            generation_pk=written,
            public_id=items[number].public_id,
            user=ready.user,
            api_key_id=ready.api_key.pk if ready.api_key is not None else None,
            pair=pair,
            stream=items[number].request.stream,
            prompt_estimate=ready.prompt_estimate,
            needed=ready.needed,
            level=ServiceLevel(
                pair.output_market.max_first_token_latency_ms,
                pair.output_market.min_throughput_tps,
            ),
            default_max_tokens=pair.output_market.default_max_tokens,
            decimals=CURRENCY_DECIMALS[pair.output_market.quote_currency],
            remaining=ready.ranked,
            counts_tokens=ready.api_key is not None and bool(ready.api_key.tokens_per_minute),
        )
    try:
        attempts = attempts_open(list(plans.values()))
    except Exception as error:
        attempts = [error] * len(plans)
    failed: list[tuple[Plan, str]] = []
    for (number, plan), attempt in zip(plans.items(), attempts, strict=True):
        if isinstance(attempt, BaseException):
            # our own failure (the database, a key that will not decrypt): the generation must
            # not stay in progress until the reaper comes
            failed.append((plan, "gateway_error"))
            outcomes[number] = attempt
        elif attempt is None:
            error = attempts_exhausted_error(plan)
            failed.append((plan, error.code))
            outcomes[number] = error
        else:
            outcomes[number] = (plan, attempt)
    try:
        generations_failed(failed)
    except DatabaseError:
        # the requests' answers stand (nothing of theirs is reserved); the reaper closes
        # generations left in progress
        logger.exception("%s failed generations not marked", len(failed))
    return outcomes


# --- finish --------------------------------------------------------------------------------------
class FinishItem(NamedTuple):
    """What a request's stream (or answer) delivered, for its last hop."""

    plan: Plan
    attempt: Attempt
    usage: Usage
    first_token_ms: int | None
    last_token_ms: int | None
    total_ms: int
    finish_reason: str | None
    broken: bool
    cancelled: bool
    time_limited: bool = False


class _Judged(NamedTuple):
    counted: int
    sla: SlaOutcome
    rate: Decimal | None
    status: str


def _judge(item: FinishItem) -> _Judged:
    # the service level and speed from our own count of what was streamed: a provider's
    # reported count must not make it look faster than it was
    usage = item.usage
    counted = (
        usage.counted_completion_tokens
        if usage.counted_completion_tokens is not None
        else usage.completion_tokens
    )
    sla = sla_evaluate(
        level=item.plan.level,
        streamed=item.plan.stream,
        first_token_ms=item.first_token_ms,
        last_token_ms=item.last_token_ms,
        total_ms=item.total_ms,
        completion_tokens=counted,
        broken=item.broken,
    )
    rate = output_tokens_per_second(
        completion_tokens=counted,
        first_token_ms=item.first_token_ms,
        last_token_ms=item.last_token_ms,
    )
    status = (
        GenerationStatus.BROKEN
        if item.broken
        else GenerationStatus.CANCELLED
        if item.cancelled
        else GenerationStatus.TIME_LIMITED
        if item.time_limited
        else GenerationStatus.COMPLETED
    )
    return _Judged(counted, sla, rate, status)


def requests_finish(items: list[FinishItem]) -> list[Finished | BaseException]:
    """The last hop of a batch: judge each request's service level, settle the reservations
    (tokens drawn, SLA credits), complete the generations, feed the providers' statistics and
    the keys' minutes. Per request: its ``Finished``, or the exception its settlement met."""
    judged = [_judge(item) for item in items]
    # the upstream calls are over: their endpoints' slots go back (one Redis round trip)
    slots.give_back_many(
        slots=[
            (item.attempt.upstream.endpoint_id, f"{item.plan.public_id}.{item.attempt.number}")
            for item in items
        ]
    )
    settled = reservations_settle_many(
        requests=[
            SettleRequest(
                item.attempt.reservation_id,
                item.usage.prompt_tokens,
                item.usage.completion_tokens,
                not verdict.sla.met,
            )
            for item, verdict in zip(items, judged, strict=True)
        ]
    )
    outcomes: list[Finished | BaseException] = []
    for item, verdict, outcome in zip(items, judged, settled, strict=True):
        status = verdict.status
        settlement: Settlement | None
        if isinstance(outcome, ReservationClosed):
            # reaped while still streaming (longer than GATEWAY_MAX_REQUEST_SECONDS):
            # released, nothing charged; say so rather than charge twice
            logger.error("generation %s: reservation released before settling", item.plan.public_id)
            settlement, status = None, GenerationStatus.INTERRUPTED
        elif isinstance(outcome, BaseException):
            outcomes.append(outcome)
            continue
        else:
            settlement = outcome
        _settle_log(item, verdict, settlement)
        if settlement is not None:
            charged = Usage(settlement.input_tokens, settlement.output_tokens, item.usage.source)
        else:
            charged = Usage(0, 0, item.usage.source)
        outcomes.append(Finished(charged, settlement, verdict.sla, verdict.rate, status))
    now = timezone.now()
    done = [
        (item, verdict, outcome)
        for item, verdict, outcome in zip(items, judged, outcomes, strict=True)
        if isinstance(outcome, Finished)
    ]
    # The money is settled: from here nothing may fail a request (the buyer must get its
    # usage, and the record must show the charge), so the records are written defensively.
    try:
        _finish_records(done, now)
    except DatabaseError:
        logger.exception("generations: records of a settled batch failed; minimal records")
        for item, _, finished in done:
            _finish_record_minimal(item, finished, now)
    try:
        request_outcomes_record(
            outcomes=[
                (item.attempt.upstream.endpoint_id, not item.broken, item.first_token_ms, rate)
                for item, (_, _, rate, _), _ in done
            ],
            at=now,
        )
    except DatabaseError:
        logger.exception("statistics samples of a settled batch not recorded")
    for item, _, finished in done:
        if not item.plan.counts_tokens:
            continue  # only a key with a tokens-per-minute limit reads its minute's count
        try:
            limits.tokens_record(
                api_key_id=item.plan.api_key_id, tokens=finished.usage.total_tokens, now=now
            )
        except Exception:
            logger.exception(
                "generation %s: the key's token minute not recorded", item.plan.public_id
            )
    return outcomes


def _settle_log(item: FinishItem, verdict: _Judged, settlement: Settlement | None) -> None:
    if item.usage.source == USAGE_DISPUTED:
        logger.warning(
            "generation %s: provider %s reported more usage than was streamed; billed %s/%s "
            "(our count of the completion: %s)",
            item.plan.public_id,
            item.attempt.provider_id,
            item.usage.prompt_tokens,
            item.usage.completion_tokens,
            verdict.counted,
        )
    if settlement is not None and (
        settlement.clipped_input_tokens or settlement.clipped_output_tokens
    ):
        logger.warning(
            "generation %s: provider usage beyond the reservation not charged (%s, %s)",
            item.plan.public_id,
            settlement.clipped_input_tokens,
            settlement.clipped_output_tokens,
        )


_FINISH_COLUMNS = (
    ("reservation_id", "bigint"),
    ("provider_id", "bigint"),
    ("endpoint_id", "bigint"),
    ("attempts", "smallint"),
    ("prompt_tokens", "bigint"),
    ("completion_tokens", "bigint"),
    ("usage_source", "varchar"),
    ("input_cost_units", "bigint"),
    ("output_cost_units", "bigint"),
    ("credit_units", "bigint"),
    ("first_token_ms", "integer"),
    ("total_ms", "integer"),
    ("output_tokens_per_second", "numeric"),
    ("status", "varchar"),
    ("finish_reason", "varchar"),
    ("sla_met", "boolean"),
    ("sla_reason", "varchar"),
    ("error_code", "varchar"),
)


def _finish_records(done: list[tuple[FinishItem, _Judged, Finished]], now: datetime) -> None:
    """Every finished generation of the batch in one statement."""
    rows = []
    for item, verdict, finished in done:
        settlement = finished.settlement
        rows.append(
            (
                item.plan.generation_pk,
                item.attempt.reservation_id,
                item.attempt.provider_id,
                item.attempt.upstream.endpoint_id,
                item.plan.attempts,
                finished.usage.prompt_tokens,
                finished.usage.completion_tokens,
                item.usage.source,
                settlement.input_cost_units if settlement else 0,
                settlement.output_cost_units if settlement else 0,
                settlement.credit_units if settlement else 0,
                item.first_token_ms,
                item.total_ms,
                verdict.rate,
                finished.status,
                (item.finish_reason or "")[:32],  # the column's width (metering cleans it)
                verdict.sla.met,
                verdict.sla.reason,
                "provider_broke_stream"
                if item.broken
                else "request_time_limit"
                if finished.status == GenerationStatus.TIME_LIMITED
                else "",
            )
        )
    _generations_finish(rows, now)


def _generations_finish(rows: list[tuple[Any, ...]], now: datetime) -> None:
    """``rows_update`` of the finished generations (``_FINISH_COLUMNS``, ``finished_at``) in
    ONE round trip: outside a transaction the statement is its own and commits without waiting
    for the WAL flush (``set_config(…, true)``, as ``_generations_insert``)."""
    if not rows:
        return
    quote = connection.ops.quote_name
    names = [name for name, _ in _FINISH_COLUMNS]
    types = ["bigint", *(sql_type for _, sql_type in _FINISH_COLUMNS)]
    params = [
        array_param(list(column), sql_type)
        for column, sql_type in zip(zip(*rows, strict=True), types, strict=True)
    ]
    assignments = ", ".join(
        [f"{quote(name)} = v.{quote(name)}" for name in names] + [f"{quote('finished_at')} = %s"]
    )
    quick = (
        ""
        if connection.in_atomic_block  # the caller's transaction keeps its own commit rule
        else ", (SELECT set_config('synchronous_commit', 'off', true)) AS quick"
    )
    # identifiers from the model's own fields (quoted); every value is a bound parameter
    sql = (
        f"UPDATE {quote(Generation._meta.db_table)} AS t SET {assignments} "  # noqa: S608  # nosec B608
        f"FROM unnest({', '.join(p for p, _ in params)}) "
        f"AS v(id, {', '.join(quote(name) for name in names)}){quick} WHERE t.id = v.id"
    )
    with server_bound_cursor() as cursor:
        cursor.execute(sql, [now, *(value for _, value in params)])


def _finish_record_minimal(item: FinishItem, finished: Finished, now: datetime) -> None:
    """The settled charge on the generation, nothing the provider said (the fallback when the
    batch's records failed); still failing, the reaper closes it from its settled
    reservation."""
    settlement = finished.settlement
    try:
        Generation.objects.filter(pk=item.plan.generation_pk).update(
            reservation_id=item.attempt.reservation_id,
            provider_id=item.attempt.provider_id,
            endpoint_id=item.attempt.upstream.endpoint_id,
            attempts=item.plan.attempts,
            prompt_tokens=finished.usage.prompt_tokens,
            completion_tokens=finished.usage.completion_tokens,
            input_cost_units=settlement.input_cost_units if settlement else 0,
            output_cost_units=settlement.output_cost_units if settlement else 0,
            credit_units=settlement.credit_units if settlement else 0,
            status=finished.status,
            finished_at=now,
        )
    except DatabaseError:
        logger.exception("generation %s: minimal record failed too", item.plan.public_id)
