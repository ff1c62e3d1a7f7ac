"""Escrow services: gateway reservations on lots, escrow release, take-or-pay expiry.

Every value movement goes through ``exchange.ledger.services``; the lots' counters move in the
same transaction as their ledger transaction, so the escrow account always equals the lots'
outstanding escrow (``ledger_audit`` checks it).

Lock order (the project's): the runner's market row → lots by id → reservation rows → ledger
balances (user accounts by id, then system accounts). Every service here locks lots with ONE
``SELECT … ORDER BY id FOR UPDATE`` before it touches the ledger, and does no I/O inside.

Exactly once: a reservation is keyed by the gateway's generation id (unique); settling or
releasing locks its row and acts only on an ``open`` one, so a settle, a release and the reaper
racing on one reservation leave exactly one outcome. Ledger transactions carry ids of our own
rows as idempotency keys.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from exchange.delivery.escrow.grouping import GroupCommit
from exchange.delivery.escrow.lots import escrow_slice
from exchange.delivery.escrow.models import Lot, Reservation, ReservationPart, ReservationStatus
from exchange.delivery.escrow.selectors import ModelPair
from exchange.errors import (
    Conflict,
    ExchangeError,
    InsufficientFunds,
    ReservationNotFound,
    ValidationFailed,
)
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger import services as ledger
from exchange.markets.models import Market
from exchange.runner.sql import rows_update

logger = logging.getLogger(__name__)

MICROSECOND = timedelta(microseconds=1)

_LOT_COUNTERS = (
    "reserved_tokens",
    "delivered_tokens",
    "credited_tokens",
    "unconsumed_tokens",
    "moved_tokens",
    "earned_units",
    "released_units",
    "fee_units",
    "credited_units",
    "moved_units",
)


class _UserRef(NamedTuple):
    """What the ledger needs of a user: the primary key (no row fetched for it)."""

    pk: int


class InsufficientAllocation(ExchangeError):
    """The buyer holds too few tokens (from that provider) for the request's worst case."""

    code = "insufficient_allocation"
    http_status = 402


class ReservationClosed(Conflict):
    code = "reservation_closed"


@dataclass(frozen=True, slots=True)
class ProviderHolding:
    provider_id: int
    input_tokens: int  # available (unreserved, unexpired) input tokens from this provider
    output_tokens: int
    earliest_expiry: datetime
    input_price: Decimal | None  # quote currency per MTok, weighted by the available tokens
    output_price: Decimal | None


@dataclass(frozen=True, slots=True)
class Settlement:
    reservation_id: int
    input_tokens: int  # drawn (used, clipped to the reservation)
    output_tokens: int
    clipped_input_tokens: int  # reported usage beyond the reservation: not charged
    clipped_output_tokens: int
    input_cost_units: int  # quote ledger units drawn from the lots (escrow)
    output_cost_units: int
    credit_units: int  # of which back to the buyer (SLA miss)
    currency: str
    sla_missed: bool
    lot_ids: tuple[int, ...]


# --- reads the gateway needs --------------------------------------------------------------------
def _weighted_price(market: Market, pairs: list[tuple[int, int]]) -> Decimal | None:
    tokens = sum(count for _, count in pairs)
    if not tokens:
        return None
    ticks = Decimal(sum(price * count for price, count in pairs)) / tokens
    return (ticks * market.tick_size).quantize(market.tick_size, rounding=ROUND_FLOOR)


# One round trip for a whole batch of the gateway's requests (it reads this before every
# request): each asker's unexpired lots of its two markets with what is free on each, and the
# ledger's available balance of each market.
_HOLDINGS_SQL = """
SELECT q.n, l.provider_id, l.market_id, l.price_ticks, l.expires_at,
       l.bought_tokens - l.delivered_tokens - l.credited_tokens - l.unconsumed_tokens
         - l.moved_tokens - l.reserved_tokens,
       (SELECT a.available FROM ledger_account a
         WHERE a.owner_id = q.holder AND a.asset_id = q.input_asset),
       (SELECT a.available FROM ledger_account a
         WHERE a.owner_id = q.holder AND a.asset_id = q.output_asset)
  FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[])
       AS q(n, holder, input, output, input_asset, output_asset)
  JOIN delivery_escrow_lot l
    ON l.holder_id = q.holder AND l.market_id IN (q.input, q.output)
 WHERE l.closed_at IS NULL AND l.expires_at > %s
"""


def holdings_get(*, user: Any, pair: ModelPair) -> list[ProviderHolding]:
    """Per provider: the user's available tokens of the pair's input and output markets (from
    unexpired lots, less what running requests reserved, capped by the ledger's available
    balance), the earliest expiry, and the weighted price per MTok of each; earliest expiry
    first. Providers with nothing available in either market are left out."""
    return holdings_get_many(askers=[(user, pair)])[0]


def holdings_get_many(*, askers: list[tuple[Any, ModelPair]]) -> list[list[ProviderHolding]]:
    """``holdings_get`` for each (user, pair), in one query."""
    if not askers:
        return []
    columns = list(
        zip(
            *(
                (
                    number,
                    user.pk,
                    pair.input_market.id,
                    pair.output_market.id,
                    pair.input_market.symbol,
                    pair.output_market.symbol,
                )
                for number, (user, pair) in enumerate(askers)
            ),
            strict=True,
        )
    )
    rows: list[list[tuple[Any, ...]]] = [[] for _ in askers]
    with connection.cursor() as cursor:
        cursor.execute(_HOLDINGS_SQL, [*(list(column) for column in columns), timezone.now()])
        for row in cursor.fetchall():
            rows[row[0]].append(row[1:])
    return [_holdings(pair, lots) for (_, pair), lots in zip(askers, rows, strict=True)]


def _holdings(pair: ModelPair, lots: list[tuple[Any, ...]]) -> list[ProviderHolding]:
    caps: dict[int, int] = {}
    found: dict[int, dict[str, Any]] = {}
    for provider_id, market_id, price, expires_at, free, input_cap, output_cap in lots:
        caps = {pair.input_market.id: input_cap or 0, pair.output_market.id: output_cap or 0}
        if free <= 0:
            continue
        entry = found.setdefault(
            provider_id,
            {"expiry": expires_at, pair.input_market.id: [], pair.output_market.id: []},
        )
        entry["expiry"] = min(entry["expiry"], expires_at)
        entry[market_id].append((price, free))
    result = []
    for provider_id, entry in found.items():
        inputs, outputs = entry[pair.input_market.id], entry[pair.output_market.id]
        result.append(
            ProviderHolding(
                provider_id=provider_id,
                input_tokens=min(sum(c for _, c in inputs), caps[pair.input_market.id]),
                output_tokens=min(sum(c for _, c in outputs), caps[pair.output_market.id]),
                earliest_expiry=entry["expiry"],
                input_price=_weighted_price(pair.input_market, inputs),
                output_price=_weighted_price(pair.output_market, outputs),
            )
        )
    return sorted(result, key=lambda holding: (holding.earliest_expiry, holding.provider_id))


def cost_estimate_units(*, market: Market, price_ticks: int, tokens: int) -> int:
    """What ``tokens`` at ``price_ticks`` cost in quote ledger units (floor), for display."""
    return price_ticks * market.units_per_tick_lot * tokens // market.tokens_per_lot


# --- reservations -------------------------------------------------------------------------------
def _lots_lock(ids: list[int] | None = None, **filters: Any) -> list[Lot]:
    """Lock lots by id (the global order) and return them, earliest expiry first."""
    query = Lot.objects.filter(id__in=ids) if ids is not None else Lot.objects.filter(**filters)
    locked = list(query.select_for_update().order_by("id"))
    return sorted(locked, key=lambda lot: (lot.expires_at, lot.id))


def _lots_save(lots: list[Lot], now: datetime) -> None:
    """Write the counters of ``lots`` (locked by the caller) in one statement; close the ones
    whose every token and unit has left."""
    for lot in lots:
        if (
            lot.closed_at is None
            and lot.remaining_tokens == 0
            and lot.reserved_tokens == 0
            and lot.earned_units == lot.released_units
        ):
            lot.closed_at = now
    rows_update(
        Lot,
        [*((name, "bigint") for name in _LOT_COUNTERS), ("closed_at", "timestamptz")],
        [(lot.id, *(getattr(lot, name) for name in _LOT_COUNTERS), lot.closed_at) for lot in lots],
    )


def _insufficient(
    needed: tuple[int, int], held: tuple[int, int], pair: ModelPair
) -> InsufficientAllocation:
    return InsufficientAllocation(
        f"Not enough allocation for {pair.model_id}: needs {needed[0]} input and {needed[1]} "
        f"output tokens, holds {held[0]} and {held[1]} (from this provider).",
        details={
            "model": pair.model_id,
            "needed": {"input_tokens": needed[0], "output_tokens": needed[1]},
            "held": {"input_tokens": held[0], "output_tokens": held[1]},
        },
    )


def _count(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ValidationFailed(f"{name} must be a non-negative integer.", details={name: value})
    return value


class OpenRequest(NamedTuple):
    """The arguments of ``reservation_open``, for a group of them."""

    user: Any
    pair: ModelPair
    provider_id: int
    input_tokens: int
    output_tokens: int
    key: str


def reservation_open(
    *,
    user: Any,
    pair: ModelPair,
    provider_id: int,
    input_tokens: int,
    output_tokens: int,
    key: str,
) -> Reservation:
    """Hold the request's worst case: ``input_tokens`` of the pair's input market and
    ``output_tokens`` of its output market, from ``provider_id``'s unexpired lots (earliest
    expiry first), in the ledger (available → held) and on the lots (reserved), in ONE short
    transaction, shared with whatever other reservations this process opens at the same moment
    (``grouping``: one commit for the group; each gets its own answer as if alone). Idempotent
    by ``key``: the same key returns the first reservation.

    Raises ``InsufficientAllocation`` (needed / held, for that provider) with nothing changed.
    Concurrent reservations can never exceed what is held: the lots are locked, and the
    ledger's and the lots' CHECK constraints stop an overdraft in any case.
    """
    return _opens.run(OpenRequest(user, pair, provider_id, input_tokens, output_tokens, key))


def reservations_open_many(*, requests: list[OpenRequest]) -> list[Any]:
    """``reservation_open`` for a caller's batch (the gateway's begin hop): one group, or as
    few as ``_opens``' limit allows. An outcome per request, in order: its ``Reservation`` or
    the exception it alone would have raised (returned, not raised)."""
    return _opens.run_many(requests)


def _open_check(request: OpenRequest) -> tuple[int, int]:
    needed = (
        _count(request.input_tokens, "input_tokens"),
        _count(request.output_tokens, "output_tokens"),
    )
    if not any(needed):
        raise ValidationFailed("A reservation needs some tokens.")
    key = request.key
    if not isinstance(key, str) or not key or len(key) > 200:
        raise ValidationFailed("key must be a non-empty string of at most 200 characters.")
    return needed


def _opens_process(requests: list[OpenRequest]) -> list[Any]:
    """Open a group of reservations in ONE durable transaction; an outcome per request (its
    Reservation, or the error it alone raises). If the group as a whole is refused (a ledger
    balance short although the lots cover it, or a concurrent open of the same key), each
    request is retried alone, so one request's refusal never fails the others."""
    outcomes: list[Any] = [None] * len(requests)
    needs: dict[int, tuple[int, int]] = {}
    for number, request in enumerate(requests):
        try:
            needs[number] = _open_check(request)
        except ExchangeError as error:
            outcomes[number] = error
    keys = {requests[number].key for number in needs}
    if len(keys) < len(needs):  # the same key twice in one group: each alone, in turn
        return [outcomes[n] or _opens_process([r])[0] for n, r in enumerate(requests)]
    existing = {r.key: r for r in Reservation.objects.filter(key__in=keys)} if keys else {}
    for number in list(needs):
        found = existing.get(requests[number].key)
        if found is not None:
            del needs[number]
            outcomes[number] = (
                found
                if found.user_id == requests[number].user.pk
                else Conflict(
                    "That key belongs to another reservation.",
                    details={"key": requests[number].key},
                )
            )
    if not needs:
        return outcomes
    held_by: dict[int, tuple[int, int]] = {}  # what each could draw from its lots
    try:
        with transaction.atomic(durable=True):
            for number, outcome in _opens_write(requests, needs, held_by).items():
                outcomes[number] = outcome
    except (InsufficientFunds, IntegrityError) as error:
        if len(needs) > 1:
            for number in needs:
                outcomes[number] = _opens_process([requests[number]])[0]
            return outcomes
        (number,) = needs
        request = requests[number]
        if isinstance(error, IntegrityError):
            # a concurrent open with the same key won the unique constraint: return its row
            found = Reservation.objects.filter(key=request.key, user=request.user).first()
            if found is None:
                raise
            outcomes[number] = found
        else:
            # the lots cover it but the ledger does not: sell orders hold the tokens
            markets = (request.pair.input_market, request.pair.output_market)
            held = held_by
            balances = [
                ledger_selectors.balance_get(user=request.user, asset=m.symbol).available
                for m in markets
            ]
            outcomes[number] = _insufficient(
                needs[number],
                (min(held[number][0], balances[0]), min(held[number][1], balances[1])),
                request.pair,
            )
    return outcomes


def _opens_write(
    requests: list[OpenRequest],
    needs: dict[int, tuple[int, int]],
    held_by: dict[int, tuple[int, int]],
) -> dict[int, Any]:
    """Inside the group's transaction: lock every lot the group may draw on (one statement, by
    id), take each request's tokens in turn (earliest expiry first), then write the
    reservations, their parts, the lots' counters and the ledger holds in a few statements."""
    now = timezone.now()
    triples = {
        (requests[n].user.pk, requests[n].provider_id, market.id)
        for n in needs
        for market in (requests[n].pair.input_market, requests[n].pair.output_market)
    }
    columns = zip(*sorted(triples), strict=True)
    holders, providers, markets_ids = (list(column) for column in columns)
    lots = sorted(
        Lot.objects.raw(
            "SELECT * FROM delivery_escrow_lot WHERE (holder_id, provider_id, market_id) IN "
            "(SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[])) "
            "AND closed_at IS NULL AND expires_at > %s ORDER BY id FOR UPDATE",
            [holders, providers, markets_ids, now],
        ),
        key=lambda lot: (lot.expires_at, lot.id),
    )
    by_owner: dict[tuple[int, int, int], list[Lot]] = {}
    for lot in lots:
        by_owner.setdefault((lot.holder_id, lot.provider_id, lot.market_id), []).append(lot)
    outcomes: dict[int, Any] = {}
    planned: list[tuple[int, list[tuple[Lot, int]]]] = []
    touched: dict[int, Lot] = {}
    for number, needed in needs.items():
        request = requests[number]
        markets = (request.pair.input_market, request.pair.output_market)
        held = []
        for market in markets:
            mine = by_owner.get((request.user.pk, request.provider_id, market.id), [])
            held.append(sum(max(lot.free_tokens, 0) for lot in mine))
        held_by[number] = (held[0], held[1])
        if held[0] < needed[0] or held[1] < needed[1]:
            outcomes[number] = _insufficient(needed, (held[0], held[1]), request.pair)
            continue
        parts: list[tuple[Lot, int]] = []
        for market, need in zip(markets, needed, strict=True):
            for lot in by_owner.get((request.user.pk, request.provider_id, market.id), []):
                if need == 0:
                    break
                take = min(max(lot.free_tokens, 0), need)
                if take:
                    parts.append((lot, take))
                    lot.reserved_tokens += take
                    touched[lot.id] = lot
                    need -= take
        planned.append((number, parts))
    if not planned:
        return outcomes
    reservations = Reservation.objects.bulk_create(
        [
            Reservation(
                user_id=requests[number].user.pk,
                provider_id=requests[number].provider_id,
                input_market=requests[number].pair.input_market,
                output_market=requests[number].pair.output_market,
                key=requests[number].key,
                input_tokens=needs[number][0],
                output_tokens=needs[number][1],
                created_at=now,
            )
            for number, _ in planned
        ]
    )
    ReservationPart.objects.bulk_create(
        [
            ReservationPart(reservation=reservation, lot=lot, tokens=tokens)
            for reservation, (_, parts) in zip(reservations, planned, strict=True)
            for lot, tokens in parts
        ]
    )
    rows_update(
        Lot,
        [("reserved_tokens", "bigint")],
        [(lot.id, lot.reserved_tokens) for lot in sorted(touched.values(), key=lambda lot: lot.id)],
    )
    ledger.delivery_hold_many(
        holds=[
            ledger.DeliveryHold(
                reservation.user_id,
                {
                    requests[number].pair.input_market.symbol: needs[number][0],
                    requests[number].pair.output_market.symbol: needs[number][1],
                },
                f"reservation:{reservation.id}",
                f"reservation:{reservation.id}:hold",
            )
            for reservation, (number, _) in zip(reservations, planned, strict=True)
        ]
    )
    for reservation, (number, _) in zip(reservations, planned, strict=True):
        outcomes[number] = reservation
    return outcomes


def _reservation_lock(reservation_id: int) -> Reservation:
    reservation = (
        # of=self: a plain FOR UPDATE would lock the joined market rows too, serialising
        # every settle of a market and deadlocking with opens' foreign-key checks on them
        Reservation.objects.select_for_update(of=("self",))
        .select_related("input_market", "output_market")
        .filter(id=reservation_id)
        .first()
    )
    if reservation is None:
        raise ReservationNotFound(f"Unknown reservation {reservation_id}.")
    return reservation


def _settlement_of(
    reservation: Reservation,
    clipped: tuple[int, int] = (0, 0),
    lot_ids: tuple[int, ...] | None = None,
) -> Settlement:
    return Settlement(
        reservation_id=reservation.id,
        input_tokens=reservation.used_input_tokens,
        output_tokens=reservation.used_output_tokens,
        clipped_input_tokens=clipped[0],
        clipped_output_tokens=clipped[1],
        input_cost_units=reservation.input_cost_units,
        output_cost_units=reservation.output_cost_units,
        credit_units=reservation.credit_units,
        currency=reservation.output_market.quote_currency,
        sla_missed=reservation.sla_missed,
        lot_ids=lot_ids
        if lot_ids is not None
        else tuple(
            ReservationPart.objects.filter(reservation=reservation, used_tokens__gt=0)
            .order_by("id")
            .values_list("lot_id", flat=True)
        ),
    )


def _credit_for(value: int, rate: Decimal) -> int:
    """The buyer's credit out of ``value`` units: floor(value × rate), exact."""
    numerator, denominator = rate.as_integer_ratio()
    return value * numerator // denominator


class SettleRequest(NamedTuple):
    """The arguments of ``reservation_settle``, for a group of them."""

    reservation_id: int
    input_tokens: int
    output_tokens: int
    sla_missed: bool


def reservation_settle(
    *, reservation_id: int, input_tokens: int, output_tokens: int, sla_missed: bool
) -> Settlement:
    """Draw the used tokens from the reservation's lots (earliest expiry first) as delivered,
    or as credited if ``sla_missed`` (then ``sla_credit_rate`` of their cost goes from escrow
    back to the buyer, in this same transaction); retire them from the ledger hold, give the
    rest back. Usage beyond the reservation is clipped to it and reported. Settling twice
    returns the first settlement; settling a released reservation raises
    ``ReservationClosed``. Concurrent settles of this process share one transaction and one
    ledger post (``grouping``), each answered as if alone."""
    return _settles.run(SettleRequest(reservation_id, input_tokens, output_tokens, sla_missed))


def reservations_settle_many(*, requests: list[SettleRequest]) -> list[Any]:
    """``reservation_settle`` for a caller's batch (the gateway's finish hop). An outcome per
    request, in order: its ``Settlement`` or the exception it alone would have raised
    (``ReservationClosed``, …; returned, not raised)."""
    return _settles.run_many(requests)


def _settles_process(requests: list[SettleRequest]) -> list[Any]:
    """Settle a group in ONE durable transaction: lock the reservations (by id), then their
    lots (by id), draw each in turn, and write the lots, parts, reservations and the ledger in
    one statement each. An outcome per request: its Settlement or its own error."""
    outcomes: list[Any] = [None] * len(requests)
    wanted: dict[int, tuple[int, int]] = {}
    for number, request in enumerate(requests):
        try:
            wanted[number] = (
                _count(request.input_tokens, "input_tokens"),
                _count(request.output_tokens, "output_tokens"),
            )
        except ExchangeError as error:
            outcomes[number] = error
    ids = [requests[number].reservation_id for number in wanted]
    if len(set(ids)) < len(ids):  # one reservation twice in a group: each alone, in turn
        return [outcomes[n] or _settles_process([r])[0] for n, r in enumerate(requests)]
    if not wanted:
        return outcomes
    now = timezone.now()
    with transaction.atomic(durable=True):
        locked = {
            reservation.id: reservation
            for reservation in (
                # of=self: a plain FOR UPDATE would lock the joined market rows too, serialising
                # every settle of a market and deadlocking with opens' foreign-key checks
                Reservation.objects.select_for_update(of=("self",))
                .select_related("input_market", "output_market")
                .filter(id__in=ids)
                .order_by("id")
            )
        }
        todo: list[int] = []
        for number in wanted:
            reservation_id = requests[number].reservation_id
            reservation = locked.get(reservation_id)
            if reservation is None:
                outcomes[number] = ReservationNotFound(f"Unknown reservation {reservation_id}.")
            elif reservation.status == ReservationStatus.SETTLED:
                outcomes[number] = _settlement_of(reservation)
            elif reservation.status != ReservationStatus.OPEN:
                outcomes[number] = ReservationClosed(f"Reservation {reservation_id} was released.")
            else:
                todo.append(number)
        if not todo:
            return outcomes
        parts_of: dict[int, list[ReservationPart]] = {}
        for part in ReservationPart.objects.filter(
            reservation_id__in=[requests[n].reservation_id for n in todo]
        ):
            parts_of.setdefault(part.reservation_id, []).append(part)
        all_parts = [part for parts in parts_of.values() for part in parts]
        lots = {lot.id: lot for lot in _lots_lock(sorted({p.lot_id for p in all_parts}))}
        settles: list[ledger.DeliverySettle] = []
        for number in todo:
            reservation = locked[requests[number].reservation_id]
            parts = parts_of.get(reservation.id, [])
            used, costs, credit = _settle_draw(
                reservation, parts, lots, wanted[number], requests[number].sla_missed
            )
            markets = (reservation.input_market, reservation.output_market)
            reserved = (reservation.input_tokens, reservation.output_tokens)
            settles.append(
                ledger.DeliverySettle(
                    reservation.user_id,
                    [
                        ledger.DeliveredTokens(market.symbol, reserved[side], used[side])
                        for side, market in enumerate(markets)
                    ],
                    markets[1].quote_currency,
                    credit,
                    f"reservation:{reservation.id}",
                    f"reservation:{reservation.id}:settle",
                )
            )
            reservation.used_input_tokens, reservation.used_output_tokens = used
            reservation.input_cost_units, reservation.output_cost_units = costs
            reservation.credit_units = credit
            reservation.sla_missed = requests[number].sla_missed
            reservation.status = ReservationStatus.SETTLED
            reservation.settled_at = now
        _lots_save(list(lots.values()), now)
        if all_parts:
            rows_update(
                ReservationPart,
                [("used_tokens", "bigint"), ("cost_units", "bigint"), ("credit_units", "bigint")],
                [(p.id, p.used_tokens, p.cost_units, p.credit_units) for p in all_parts],
            )
        ledger.delivery_settle_many(settles=settles)
        settled = [locked[requests[number].reservation_id] for number in todo]
        rows_update(
            Reservation,
            [
                ("used_input_tokens", "bigint"),
                ("used_output_tokens", "bigint"),
                ("input_cost_units", "bigint"),
                ("output_cost_units", "bigint"),
                ("credit_units", "bigint"),
                ("sla_missed", "boolean"),
            ],
            [
                (
                    r.id,
                    r.used_input_tokens,
                    r.used_output_tokens,
                    r.input_cost_units,
                    r.output_cost_units,
                    r.credit_units,
                    r.sla_missed,
                )
                for r in settled
            ],
            constants={"status": ReservationStatus.SETTLED.value, "settled_at": now},
        )
    for number in todo:
        reservation = locked[requests[number].reservation_id]
        parts = parts_of.get(reservation.id, [])
        used = (reservation.used_input_tokens, reservation.used_output_tokens)
        outcomes[number] = _settlement_of(
            reservation,
            (wanted[number][0] - used[0], wanted[number][1] - used[1]),
            tuple(part.lot_id for part in sorted(parts, key=lambda p: p.id) if part.used_tokens),
        )
    return outcomes


def _settle_draw(
    reservation: Reservation,
    parts: list[ReservationPart],
    lots: dict[int, Lot],
    used_wanted: tuple[int, int],
    sla_missed: bool,
) -> tuple[tuple[int, int], list[int], int]:
    """One reservation's draw on its (locked) lots: the used tokens, earliest expiry first,
    as delivered or credited; the rest of its reservation leaves the lots' reserved counts.
    Returns (used per side, cost per side, credit)."""
    markets = (reservation.input_market, reservation.output_market)
    reserved = (reservation.input_tokens, reservation.output_tokens)
    used = (min(used_wanted[0], reserved[0]), min(used_wanted[1], reserved[1]))
    costs = [0, 0]
    credit = 0
    for side, market in enumerate(markets):
        need = used[side]
        rate = market.sla_credit_rate
        mine = sorted(
            (part for part in parts if lots[part.lot_id].market_id == market.id),
            key=lambda part: (lots[part.lot_id].expires_at, part.lot_id),
        )
        for part in mine:
            lot = lots[part.lot_id]
            lot.reserved_tokens -= part.tokens
            take = min(part.tokens, need)
            need -= take
            if not take:
                continue
            drawn = lot.bought_tokens - lot.remaining_tokens
            value = escrow_slice(lot.escrow_units, drawn + take, lot.bought_tokens)
            value -= escrow_slice(lot.escrow_units, drawn, lot.bought_tokens)
            part_credit = _credit_for(value, rate) if sla_missed else 0
            if sla_missed:
                lot.credited_tokens += take
            else:
                lot.delivered_tokens += take
            lot.credited_units += part_credit
            lot.earned_units += value - part_credit
            part.used_tokens, part.cost_units, part.credit_units = take, value, part_credit
            costs[side] += value
            credit += part_credit
    return used, costs, credit


def reservation_release(*, reservation_id: int) -> None:
    """Give a reservation back whole (a failed attempt costs nothing). A no-op on a reservation
    that is no longer open (already released, or settled: a settlement is never undone)."""
    _reservation_release(reservation_id)


def _reservation_release(reservation_id: int) -> bool:
    now = timezone.now()
    with transaction.atomic(durable=True):
        reservation = _reservation_lock(reservation_id)
        if reservation.status != ReservationStatus.OPEN:
            return False
        parts = list(ReservationPart.objects.filter(reservation=reservation))
        lots = {lot.id: lot for lot in _lots_lock([part.lot_id for part in parts])}
        for part in parts:
            lots[part.lot_id].reserved_tokens -= part.tokens
        _lots_save(list(lots.values()), now)
        ledger.delivery_release(
            user=_UserRef(reservation.user_id),
            tokens={
                reservation.input_market.symbol: reservation.input_tokens,
                reservation.output_market.symbol: reservation.output_tokens,
            },
            reference=f"reservation:{reservation.id}",
            idempotency_key=f"reservation:{reservation.id}:release",
        )
        reservation.status = ReservationStatus.RELEASED
        reservation.settled_at = now
        reservation.save(update_fields=["status", "settled_at"])
        return True


def reservations_reap(*, older_than: timedelta) -> int:
    """Release the open reservations created more than ``older_than`` ago (left by a gateway
    process that died): nothing is charged. Idempotent; a reservation the gateway settles
    meanwhile stays settled. Returns how many this call released."""
    cutoff = timezone.now() - older_than
    ids = list(
        Reservation.objects.filter(status=ReservationStatus.OPEN, created_at__lt=cutoff)
        .order_by("id")
        .values_list("id", flat=True)
    )
    return sum(1 for reservation_id in ids if _reservation_release(reservation_id))


# --- escrow release (providers paid for delivered and expired tokens) ------------------------
def _release_key(market_id: int, provider_id: int, lots: list[Lot]) -> str:
    # the lots' released totals only grow, so the set (lot, released after) names one payment
    digest = hashlib.sha256(
        ",".join(f"{lot.id}:{lot.released_units}" for lot in lots).encode()
    ).hexdigest()[:32]
    return f"escrow:release:{market_id}:{provider_id}:{digest}"


def escrow_release_due(*, provider_id: int | None = None, market_id: int | None = None) -> int:
    """Pay providers what their lots earned (delivered, credited at less than 100%, expired
    unconsumed), less the seller fee pro rata: ONE ledger transaction per provider and market.
    Cumulative and exact: each lot pays ``earned − released`` and its fee is
    ``ceil(released × rate) − fee already taken``, so rounding never drifts. Returns how many
    payments were made."""
    due = Lot.objects.filter(earned_units__gt=F("released_units"))
    if provider_id is not None:
        due = due.filter(provider_id=provider_id)
    if market_id is not None:
        due = due.filter(market_id=market_id)
    groups = sorted(set(due.values_list("provider_id", "market_id")))
    paid = 0
    for provider, market in groups:
        if _escrow_release_one(provider, market):
            paid += 1
    return paid


def _escrow_release_one(provider_id: int, market_id: int) -> bool:
    now = timezone.now()
    with transaction.atomic(durable=True):
        lots = _lots_lock(
            provider_id=provider_id, market_id=market_id, earned_units__gt=F("released_units")
        )
        if not lots:
            return False
        gross = fee = 0
        for lot in lots:
            gross += lot.earned_units - lot.released_units
            lot.released_units = lot.earned_units
            target = min(
                ledger.fee_for(notional=lot.released_units, rate=lot.seller_fee_rate),
                lot.released_units,
            )
            fee += target - lot.fee_units
            lot.fee_units = target
        market = Market.objects.get(id=market_id)
        ledger.escrow_release_many(
            releases=[
                ledger.EscrowRelease(
                    provider=lots[0].provider,
                    currency=market.quote_currency,
                    gross=gross,
                    fee=fee,
                    reference=f"escrow:{market.symbol}:provider:{provider_id}",
                    idempotency_key=_release_key(market_id, provider_id, lots),
                )
            ]
        )
        _lots_save(lots, now)
    return True


# --- take-or-pay expiry -------------------------------------------------------------------------
def lots_expire_due(*, now: datetime | None = None) -> int:
    """Close lots past their expiry: first the holder's open sell orders that hold their
    tokens are cancelled through the runner (then the next run retires); the unreserved
    remaining tokens are retired (unconsumed) and their escrow earned by the provider (paid
    by ``escrow_release_due``, which runs after). Lots still reserved by a running request
    wait for it. Each holder and market on its own: one that fails is logged and retried next
    run, the others go on. Returns how many lots this call retired or closed."""
    moment = now or timezone.now()
    groups = sorted(
        set(
            Lot.objects.filter(closed_at__isnull=True, expires_at__lte=moment).values_list(
                "holder_id", "market_id"
            )
        )
    )
    handled = 0
    for holder_id, market_id in groups:
        try:
            market = Market.objects.get(id=market_id)
            outcome = _lots_expire_one(holder_id, market, moment)
            if isinstance(outcome, _Shortfall):
                _asks_cancel_for(holder_id, market, outcome.tokens)
                continue
            handled += outcome
        except Exception:
            logger.exception("expiring the lots of user %s in market %s", holder_id, market_id)
    escrow_release_due()
    return handled


class _Shortfall(NamedTuple):
    """The holder's available tokens fall short of its expired lots' by this many (its sell
    orders hold them)."""

    tokens: int


def _asks_cancel_for(holder_id: int, market: Market, shortfall: int) -> None:
    """Cancel the holder's newest asks in ``market`` until they free ``shortfall`` tokens
    (through the runner; the next expiry run retires the lots). Older asks, and the tokens
    of its live lots they may be selling, are left alone."""
    from orders.models import OPEN_STATUSES, Order
    from orders.services import order_cancel

    asks = (
        Order.objects.filter(
            user_id=holder_id, market=market, side="sell", status__in=OPEN_STATUSES
        )
        .select_related("user")
        .order_by("-created_at", "-id")
    )
    for order in asks:
        if shortfall <= 0:
            break
        try:
            order_cancel(user=order.user, order_id=order.id)
        except ExchangeError:  # it ended meanwhile: nothing to cancel
            continue
        shortfall -= order.hold_remaining


def _lots_expire_one(holder_id: int, market: Market, moment: datetime) -> int | _Shortfall:
    """Retire one holder's expired lots in one market. ``_Shortfall``: the ledger holds too
    few available tokens (sell orders hold them).

    Take-or-pay assumes the capacity could be consumed: when the provider's endpoint for the
    market was failing at expiry and since at least the dead-man window before the lot's end,
    the unconsumed tokens are credited to the holder in full instead (``credited``, visible on
    both sides as the lot's credit), their escrow back to the holder. Otherwise the share of the
    lot's life (from its creation to its expiry) that the endpoint spent DOWN is credited the
    same way (``_downtime_credit``), and only the rest is the provider's."""
    from exchange.delivery.endpoints.selectors import outage_intervals_get, outages_get

    now = timezone.now()
    with transaction.atomic(durable=True):
        lots = _lots_lock(
            holder_id=holder_id, market=market, closed_at__isnull=True, expires_at__lte=moment
        )
        retire = {lot.id: lot.free_tokens for lot in lots if lot.free_tokens > 0}
        total = sum(retire.values())
        if total:
            holder = lots[0].holder
            available = ledger_selectors.balance_get(user=holder, asset=market.symbol).available
            if available < total:
                return _Shortfall(total - available)
            outages = outages_get(keys={(lot.provider_id, market.id) for lot in lots})
            downs = outage_intervals_get(
                market_id=market.id,
                provider_ids={lot.provider_id for lot in lots},
                start=min(lot.created_at for lot in lots),
                end=max(lot.expires_at for lot in lots),
            )
            window = timedelta(seconds=settings.DELIVERY_DEADMAN_SECONDS)
            refund = 0
            by_provider: dict[int, int] = {}
            for lot in lots:
                tokens = retire.get(lot.id, 0)
                if not tokens:
                    continue
                by_provider[lot.provider_id] = by_provider.get(lot.provider_id, 0) + tokens
                drawn = lot.bought_tokens - lot.remaining_tokens
                value = escrow_slice(lot.escrow_units, drawn + tokens, lot.bought_tokens)
                value -= escrow_slice(lot.escrow_units, drawn, lot.bought_tokens)
                down_since = outages[lot.provider_id, market.id]
                if down_since is not None and down_since + window <= lot.expires_at:
                    lot.credited_tokens += tokens
                    lot.credited_units += value
                    refund += value
                else:
                    credit = _downtime_credit(tokens, lot, downs[lot.provider_id])
                    credit_value = escrow_slice(lot.escrow_units, drawn + credit, lot.bought_tokens)
                    credit_value -= escrow_slice(lot.escrow_units, drawn, lot.bought_tokens)
                    lot.credited_tokens += credit
                    lot.credited_units += credit_value
                    refund += credit_value
                    lot.unconsumed_tokens += tokens - credit
                    lot.earned_units += value - credit_value
            # the retired totals only grow: (lot, retired after) names one retirement
            digest = hashlib.sha256(
                ",".join(
                    f"{lot.id}:{lot.unconsumed_tokens}:{lot.credited_tokens}" for lot in lots
                ).encode()
            ).hexdigest()[:32]
            ledger.lot_expire_retire(
                user=holder,
                market=market,
                tokens_by_provider=by_provider,
                reference=f"lots:{market.symbol}:holder:{holder_id}",
                idempotency_key=f"lot-expire:{market.id}:{holder_id}:{digest}",
                refund_units=refund,
            )
        _lots_save(lots, now)
        return len(lots)


def _downtime_credit(tokens: int, lot: Lot, outages: list[tuple[datetime, datetime]]) -> int:
    """Of ``tokens`` left unconsumed in ``lot``, those credited back: the share of the lot's life
    its provider's endpoint was DOWN (in whole microseconds, rounded down: the provider keeps
    a fraction of a token). Outages may not overlap each other (one endpoint per provider and
    market), so their overlaps with the lot add up."""
    life = (lot.expires_at - lot.created_at) // MICROSECOND
    if life <= 0 or not outages:
        return 0
    down = 0
    for started, ended in outages:
        overlap = min(ended, lot.expires_at) - max(started, lot.created_at)
        down += max(overlap // MICROSECOND, 0)
    return tokens * min(down, life) // life


# one group commit each per process (see ``grouping``); 100: a group's statements stay small
_opens: GroupCommit[OpenRequest, Reservation] = GroupCommit(_opens_process, limit=100)
_settles: GroupCommit[SettleRequest, Settlement] = GroupCommit(_settles_process, limit=100)

__all__ = [
    "InsufficientAllocation",
    "ProviderHolding",
    "ReservationClosed",
    "Settlement",
    "cost_estimate_units",
    "escrow_release_due",
    "holdings_get",
    "lots_expire_due",
    "reservation_open",
    "reservation_release",
    "reservation_settle",
    "reservations_reap",
]
