"""Lots in the engine runner's batch: which part of each trade is a resale, and the lot rows.

The runner calls ``trade_lots_plan`` inside its batch transaction, before posting the ledger
(the plan says how much of each trade's notional goes to escrow), and ``trade_lots_write``
after inserting the trades (lots name their trade). Set-based: ONE query locks and reads the
open lots of the batch's sellers, ONE reads the listings' ends of the primary sales, ONE
inserts the new lots and ONE updates the lots that shrank, whatever the batch size.

Lock order: the runner holds its market's engine state row; lots are locked by id, before any
ledger balance (as every escrow service does), so nothing deadlocks with reservations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction

from exchange.db import array_param, server_bound_cursor


def sale_cutoff(now: datetime) -> datetime:
    """Tokens change hands only from lots (and capacity) that live past this: a lot bought
    expired, or about to, could not be consumed and take-or-pay would charge for it."""
    return now + timedelta(seconds=settings.DELIVERY_LOT_MIN_LIFETIME_SECONDS)


def escrow_slice(escrow: int, drawn: int, bought: int) -> int:
    """What the first ``drawn`` of a lot's ``bought`` tokens are worth: floor(escrow × drawn /
    bought). A draw is worth the difference of this before and after it, so the draws of a lot
    add up to exactly its escrow (migration 0002 checks the same rule in the database)."""
    return escrow * drawn // bought


class SaleInput(NamedTuple):
    """One trade of the batch, as the plan needs it."""

    buyer_id: int
    seller_id: int
    sell_order_id: int
    price_ticks: int
    tokens: int
    notional: int
    seller_fee_rate: Decimal


@dataclass(slots=True)
class _OpenLot:
    id: int
    provider_id: int
    price_ticks: int
    seller_fee_rate: Decimal
    expires_at: datetime
    bought: int
    escrow: int
    reserved: int
    drawn: int
    moved_tokens: int
    moved_units: int
    earned: int
    released: int
    changed: bool = False


@dataclass
class LotPlan:
    escrow: list[int]  # per trade: the part of its notional paid into escrow
    # new lots: (trade index, holder, provider, parent, price, fee rate, expires, tokens, units)
    new: list[tuple[int, int, int, int | None, int, Decimal, datetime | None, int, int]] = field(
        default_factory=list
    )
    shrunk: list[_OpenLot] = field(default_factory=list)
    # sell orders whose tokens are not deliverable (no live lot, no live capacity of the
    # seller): the runner cancels them and matches the batch again without them
    refused: set[int] = field(default_factory=set)


_DRAWN = "l.delivered_tokens + l.credited_tokens + l.unconsumed_tokens + l.moved_tokens"
_FREE = f"l.bought_tokens - ({_DRAWN}) - l.reserved_tokens"
_LOT_COLUMNS = (
    "l.id, l.provider_id, l.price_ticks, l.seller_fee_rate, l.expires_at, l.bought_tokens, "
    f"l.escrow_units, l.reserved_tokens, {_DRAWN}, l.moved_tokens, l.moved_units, "
    "l.earned_units, l.released_units, l.holder_id"
)


# Only the lots a batch can draw on are locked: per seller, its open lots in FIFO order up to
# the tokens it sells in the batch (a window over the free tokens). The window is read from the
# statement's snapshot; the locked rows are re-read as of the lock (READ COMMITTED), so a lot a
# reservation drew on meanwhile is seen as it is now, and a seller whose locked lots then fall
# short is read again in full (``_sellers_lots_all``). Lots that end before the sale cutoff
# are never sold (the expiry task retires them).
_LOTS_NEEDED = f"""
WITH need AS MATERIALIZED (
    SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS n(holder_id, tokens)
), ranked AS MATERIALIZED (
    SELECT l.id, l.holder_id, {_FREE} AS free,
           SUM({_FREE}) OVER (PARTITION BY l.holder_id ORDER BY l.expires_at, l.id)
               - ({_FREE}) AS before
      FROM delivery_escrow_lot l
     WHERE l.market_id = %s AND l.holder_id IN (SELECT holder_id FROM need)
       AND l.closed_at IS NULL AND l.expires_at > %s AND {_FREE} > 0
)
SELECT {_LOT_COLUMNS}, r.free FROM delivery_escrow_lot l
  JOIN ranked r ON r.id = l.id
  JOIN need n ON n.holder_id = l.holder_id
 WHERE r.before < n.tokens
 ORDER BY l.id FOR UPDATE OF l
"""  # noqa: S608 (constant columns)  # nosec B608


def _lots_read(
    sql: str, params: list[Any], stale: set[int] | None = None
) -> dict[int, list[_OpenLot]]:
    """Open lots by holder, FIFO by expiry. With ``stale``, rows carry their free tokens as of
    the snapshot, and holders whose lots have fewer free tokens now are added to it."""
    with server_bound_cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    lots: dict[int, list[_OpenLot]] = {}
    for row in rows:
        if stale is not None:
            *row, snapshot_free = row
            lot = _OpenLot(*row[:-1])
            if lot.bought - lot.drawn - lot.reserved < snapshot_free:
                stale.add(row[-1])
        else:
            lot = _OpenLot(*row[:-1])
        lots.setdefault(row[-1], []).append(lot)
    for held in lots.values():
        held.sort(key=lambda lot: (lot.expires_at, lot.id))  # FIFO by expiry
    return lots


def _sellers_lots(
    market_id: int, needs: dict[int, int], cutoff: datetime
) -> dict[int, list[_OpenLot]]:
    """Lock and read the open lots the sellers (id → tokens sold) can draw on."""
    sellers = sorted(needs)
    holder_ids = array_param(sellers, "bigint")[1]  # integer arrays: %s::bigint[]
    tokens = array_param([needs[seller] for seller in sellers], "bigint")[1]
    stale: set[int] = set()
    # The window is locked inside a savepoint: if it proves too short, rolling back to it
    # drops its locks, and ONE statement locks every open lot of the sellers in id order.
    # Locking the rest in a second statement while holding the window would take lot locks
    # out of id order and could deadlock with a reservation (which locks by id).
    savepoint = transaction.savepoint()
    lots = _lots_read(_LOTS_NEEDED, [holder_ids, tokens, market_id, cutoff], stale)
    if not stale:
        transaction.savepoint_commit(savepoint)
        return lots
    transaction.savepoint_rollback(savepoint)  # a reservation drew on them meanwhile
    return _sellers_lots_all(market_id, sellers, cutoff)


def _sellers_lots_all(
    market_id: int, sellers: list[int], cutoff: datetime
) -> dict[int, list[_OpenLot]]:
    placeholder, value = array_param(sellers, "bigint")
    return _lots_read(
        f"SELECT {_LOT_COLUMNS} FROM delivery_escrow_lot l "  # noqa: S608 (constant columns)  # nosec B608
        f"WHERE l.market_id = %s AND l.holder_id = ANY({placeholder}) AND l.closed_at IS NULL "
        "AND l.expires_at > %s ORDER BY l.id FOR UPDATE",
        [market_id, value, cutoff],
    )


# Per sell order: the end of the live listing its tokens came from, else the latest end of the
# seller's live listings in the market (a listing is live when active and ending after the sale
# cutoff). None: the seller has no live capacity there, so tokens it holds beyond its lots are
# not capacity anyone can deliver (review finding 4: tokens without a lot — a staff
# correction, balances from before escrow — are never sold as the holder's own capacity).
_LISTING_ENDS = """
SELECT o.id,
       COALESCE(
           (SELECT l.available_until FROM orders_capacitylisting l
             WHERE l.id = o.capacity_listing_id AND l.status = 'active'
               AND l.available_until > %(cutoff)s),
           (SELECT max(x.available_until) FROM orders_capacitylisting x
             WHERE x.provider_id = o.user_id AND x.market_id = %(market)s
               AND x.status = 'active' AND x.available_until > %(cutoff)s))
  FROM orders_order o
 WHERE o.id = ANY(%(orders)s::bigint[])
"""


def _listing_ends(
    market_id: int, sell_order_ids: list[int], cutoff: datetime
) -> dict[int, datetime | None]:
    """Per sell order: the end of the seller's live capacity, or None."""
    value = array_param(sell_order_ids, "bigint")[1]
    with server_bound_cursor() as cursor:
        cursor.execute(_LISTING_ENDS, {"market": market_id, "cutoff": cutoff, "orders": value})
        return dict(cursor.fetchall())


def trade_lots_plan(*, market_id: int, sales: list[SaleInput], now: datetime) -> LotPlan:
    """Split each sale into resale (the seller's open lots living past the sale cutoff, FIFO
    by expiry, unreserved tokens) and primary (the rest: paid into escrow), and plan the lots.
    A primary part needs the seller's live capacity in the market (an active listing ending
    after the cutoff): otherwise the sell order is in ``refused`` and the plan must not be
    written. Locks the sellers' open
    lots in this market; must run in the runner's batch transaction."""
    plan = LotPlan(escrow=[0] * len(sales))
    if not sales:
        return plan
    cutoff = sale_cutoff(now)
    needs: dict[int, int] = {}
    for sale in sales:
        needs[sale.seller_id] = needs.get(sale.seller_id, 0) + sale.tokens
    lots = _sellers_lots(market_id, needs, cutoff)
    children: dict[tuple[int, int, int, Decimal, datetime], list[int]] = {}
    primary_orders: list[int] = []
    primary: list[tuple[int, int, int]] = []  # (trade index, primary tokens, escrow units)
    for index, sale in enumerate(sales):
        need = sale.tokens
        for lot in lots.get(sale.seller_id, ()):
            if need == 0:
                break
            free = lot.bought - lot.drawn - lot.reserved
            if free <= 0:
                continue
            take = min(free, need)
            value = escrow_slice(lot.escrow, lot.drawn + take, lot.bought) - escrow_slice(
                lot.escrow, lot.drawn, lot.bought
            )
            lot.drawn += take
            lot.moved_tokens += take
            lot.moved_units += value
            lot.changed = True
            need -= take
            # Lots alike (provider, price, fee rate, expiry) move as ONE child lot: a resale
            # drawing on many small lots would otherwise multiply the rows. The child names
            # the first of them as its parent.
            alike = (index, lot.provider_id, lot.price_ticks, lot.seller_fee_rate, lot.expires_at)
            child = children.get(alike)
            if child is None:
                children[alike] = [lot.id, take, value]
            else:
                child[1] += take
                child[2] += value
        if need:
            # the seller's own capacity: its share of the notional (floor; the reseller's part
            # gets the rounding) goes to escrow
            units = sale.notional if need == sale.tokens else sale.notional * need // sale.tokens
            plan.escrow[index] = units
            primary.append((index, need, units))
            primary_orders.append(sale.sell_order_id)
    for (index, provider, price, rate, expires), (parent, tokens, units) in children.items():
        plan.new.append(
            (index, sales[index].buyer_id, provider, parent, price, rate, expires, tokens, units)
        )
    if primary:
        ends = _listing_ends(market_id, primary_orders, cutoff)
        for index, tokens, units in primary:
            sale = sales[index]
            expires = ends[sale.sell_order_id]
            if expires is None:
                # expired lots, an ended listing, or tokens without lots from a seller with
                # no live capacity: nothing the buyer could consume
                plan.refused.add(sale.sell_order_id)
                continue
            plan.new.append(
                (index, sale.buyer_id, sale.seller_id, None, sale.price_ticks,
                 sale.seller_fee_rate, expires, tokens, units)
            )  # fmt: skip
    plan.shrunk = [lot for held in lots.values() for lot in held if lot.changed]
    return plan


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch, exact (integer arrays travel as one cheap literal)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# Integer arrays only (each one a single literal, see ``exchange.db.array_param``): the fee
# rate travels as text, times as microseconds; zero counters come from constants.
_LOTS_INSERT = """
INSERT INTO delivery_escrow_lot (
    holder_id, market_id, provider_id, trade_id, parent_id, price_ticks, seller_fee_rate,
    expires_at, bought_tokens, escrow_units, reserved_tokens, delivered_tokens,
    credited_tokens, unconsumed_tokens, moved_tokens, earned_units, released_units, fee_units,
    credited_units, moved_units, created_at)
SELECT v.holder_id, %s, v.provider_id, v.trade_id, v.parent_id, v.price_ticks,
       v.seller_fee_rate::numeric, 'epoch'::timestamptz + v.expires * interval '1 microsecond',
       v.tokens, v.units, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, %s
  FROM unnest({arrays}) AS v(holder_id, provider_id, trade_id, parent_id, price_ticks,
                             seller_fee_rate, expires, tokens, units)
"""

_LOTS_SHRINK = """
UPDATE delivery_escrow_lot AS l
   SET moved_tokens = v.moved_tokens, moved_units = v.moved_units,
       closed_at = CASE WHEN v.closing = 1 THEN %s::timestamptz END
  FROM unnest({arrays}) AS v(id, moved_tokens, moved_units, closing)
 WHERE l.id = v.id
"""


def _execute(sql: str, constants: list[Any], columns: list[tuple[list[Any], str]]) -> None:
    params = [array_param(values, sql_type) for values, sql_type in columns]
    with server_bound_cursor() as cursor:
        cursor.execute(
            sql.format(arrays=", ".join(placeholder for placeholder, _ in params)),
            [*constants, *(value for _, value in params)],
        )


def trade_lots_write(*, plan: LotPlan, market_id: int, trade_ids: list[int], now: Any) -> None:
    """Insert the planned lots (naming their trades) and update the lots that shrank; a lot
    that gave away its last token with nothing left to pay is closed."""
    if plan.new:
        rows = plan.new
        _execute(
            _LOTS_INSERT,
            [market_id, now],
            [
                ([row[1] for row in rows], "bigint"),
                ([row[2] for row in rows], "bigint"),
                ([trade_ids[row[0]] for row in rows], "bigint"),
                ([row[3] for row in rows], "bigint"),
                ([row[4] for row in rows], "bigint"),
                ([str(row[5]) for row in rows], "text"),
                ([_micros(row[6]) for row in rows], "bigint"),
                ([row[7] for row in rows], "bigint"),
                ([row[8] for row in rows], "bigint"),
            ],
        )
    if plan.shrunk:
        lots = plan.shrunk
        _execute(
            _LOTS_SHRINK,
            [now],
            [
                ([lot.id for lot in lots], "bigint"),
                ([lot.moved_tokens for lot in lots], "bigint"),
                ([lot.moved_units for lot in lots], "bigint"),
                (
                    [
                        int(
                            lot.drawn == lot.bought
                            and not lot.reserved
                            and lot.earned == lot.released
                        )
                        for lot in lots
                    ],
                    "bigint",
                ),
            ],
        )
