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
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from exchange.db import array_param, server_bound_cursor
from exchange.delivery.escrow.models import Lot
from exchange.runner.sql import rows_insert, rows_update

# A primary sale whose seller has no capacity listing in the market (tokens from a staff
# adjustment, a benchmark) still needs an expiry for take-or-pay.
DEFAULT_LOT_LIFETIME = timedelta(days=30)


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


_LOT_COLUMNS = (
    "id, provider_id, price_ticks, seller_fee_rate, expires_at, bought_tokens, escrow_units, "
    "reserved_tokens, delivered_tokens + credited_tokens + unconsumed_tokens + moved_tokens, "
    "moved_tokens, moved_units, earned_units, released_units, holder_id"
)


def _sellers_lots(market_id: int, sellers: list[int]) -> dict[int, list[_OpenLot]]:
    placeholder, value = array_param(sellers, "bigint")
    with server_bound_cursor() as cursor:
        cursor.execute(
            f"SELECT {_LOT_COLUMNS} FROM delivery_escrow_lot "  # noqa: S608 (constant columns)
            f"WHERE market_id = %s AND holder_id = ANY({placeholder}) AND closed_at IS NULL "
            "ORDER BY id FOR UPDATE",
            [market_id, value],
        )
        rows = cursor.fetchall()
    lots: dict[int, list[_OpenLot]] = {}
    for row in rows:
        lots.setdefault(row[-1], []).append(_OpenLot(*row[:-1]))
    for held in lots.values():
        held.sort(key=lambda lot: (lot.expires_at, lot.id))  # FIFO by expiry
    return lots


def _listing_ends(market_id: int, sell_order_ids: list[int]) -> dict[int, datetime | None]:
    """The end of the listing each sell order's tokens came from, else the provider's latest
    listing end in the market (None: no listing at all)."""
    placeholder, value = array_param(sell_order_ids, "bigint")
    with server_bound_cursor() as cursor:
        cursor.execute(
            "SELECT o.id, COALESCE(l.available_until, ("  # noqa: S608 (placeholder only)
            "  SELECT max(x.available_until) FROM orders_capacitylisting x"
            "   WHERE x.provider_id = o.user_id AND x.market_id = %s))"
            "  FROM orders_order o"
            "  LEFT JOIN orders_capacitylisting l ON l.id = o.capacity_listing_id"
            f" WHERE o.id = ANY({placeholder})",
            [market_id, value],
        )
        return dict(cursor.fetchall())


def trade_lots_plan(*, market_id: int, sales: list[SaleInput], now: datetime) -> LotPlan:
    """Split each sale into resale (the seller's open lots, FIFO by expiry, unreserved tokens)
    and primary (the rest: paid into escrow), and plan the lots. Locks the sellers' open lots
    in this market; must run in the runner's batch transaction."""
    plan = LotPlan(escrow=[0] * len(sales))
    if not sales:
        return plan
    lots = _sellers_lots(market_id, sorted({sale.seller_id for sale in sales}))
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
            plan.new.append(
                (index, sale.buyer_id, lot.provider_id, lot.id, lot.price_ticks,
                 lot.seller_fee_rate, lot.expires_at, take, value)
            )  # fmt: skip
        if need:
            # the seller's own capacity: its share of the notional (floor; the reseller's part
            # gets the rounding) goes to escrow
            units = sale.notional if need == sale.tokens else sale.notional * need // sale.tokens
            plan.escrow[index] = units
            primary.append((index, need, units))
            primary_orders.append(sale.sell_order_id)
    if primary:
        ends = _listing_ends(market_id, primary_orders)
        for index, tokens, units in primary:
            sale = sales[index]
            expires = ends.get(sale.sell_order_id) or now + DEFAULT_LOT_LIFETIME
            plan.new.append(
                (index, sale.buyer_id, sale.seller_id, None, sale.price_ticks,
                 sale.seller_fee_rate, expires, tokens, units)
            )  # fmt: skip
    plan.shrunk = [lot for held in lots.values() for lot in held if lot.changed]
    return plan


def trade_lots_write(*, plan: LotPlan, market_id: int, trade_ids: list[int], now: Any) -> None:
    """Insert the planned lots (naming their trades) and update the lots that shrank; a lot
    that gave away its last token with nothing left to pay is closed."""
    if plan.new:
        rows_insert(
            Lot,
            [
                ("holder_id", "bigint"),
                ("market_id", "bigint"),
                ("provider_id", "bigint"),
                ("trade_id", "bigint"),
                ("parent_id", "bigint"),
                ("price_ticks", "bigint"),
                ("seller_fee_rate", "numeric"),
                ("expires_at", "timestamptz"),
                ("bought_tokens", "bigint"),
                ("escrow_units", "bigint"),
                ("reserved_tokens", "bigint"),
                ("delivered_tokens", "bigint"),
                ("credited_tokens", "bigint"),
                ("unconsumed_tokens", "bigint"),
                ("moved_tokens", "bigint"),
                ("earned_units", "bigint"),
                ("released_units", "bigint"),
                ("fee_units", "bigint"),
                ("credited_units", "bigint"),
                ("moved_units", "bigint"),
                ("created_at", "timestamptz"),
            ],
            [
                (holder, market_id, provider, trade_ids[index], parent, price, rate, expires,
                 tokens, units, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, now)
                for index, holder, provider, parent, price, rate, expires, tokens, units
                in plan.new
            ],
        )  # fmt: skip
    if plan.shrunk:
        rows_update(
            Lot,
            [("moved_tokens", "bigint"), ("moved_units", "bigint"), ("closed_at", "timestamptz")],
            [
                (
                    lot.id,
                    lot.moved_tokens,
                    lot.moved_units,
                    now
                    if lot.drawn == lot.bought and not lot.reserved and lot.earned == lot.released
                    else None,
                )
                for lot in plan.shrunk
            ],
        )
