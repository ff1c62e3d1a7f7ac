"""Order intake and cancellation.

One database transaction per order: validate, hold the funds or tokens in the ledger, record the
order as pending and journal the command. The engine runner does the rest; see
``exchange.runner``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy

from accounts.models import User
from exchange.db import unique_row
from exchange.delivery.endpoints.selectors import ask_check as endpoint_ask_check
from exchange.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    MarketClosed,
    MarketHalted,
    NoLiquidity,
    OrderNotOpen,
    ValidationFailed,
)
from exchange.ledger import services as ledger
from exchange.markets.models import Market, MarketStatus
from exchange.runner.progress import progress_version, progress_wait
from exchange.runner.sql import rows_insert
from orders import waiting
from orders.models import (
    OPEN_STATUSES,
    CommandKind,
    Order,
    OrderCommand,
    OrderStatus,
    OrderType,
    SelfTrade,
    Side,
    TimeInForce,
)
from orders.selectors import engine_state_get, order_get
from orders.units import notional_units, price_to_ticks, quantity_to_lots

logger = logging.getLogger(__name__)

# Ledger amounts are bigint: keep every hold (and so every fill) far inside that range.
MAX_HOLD_UNITS = 10**18

# How often a request waiting for the runner re-reads its order (a primary-key lookup).


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated order request, in the market's integer units."""

    market: Market
    side: str
    type: str
    price_ticks: int | None
    quantity_lots: int
    time_in_force: str
    expire_time: datetime | None
    post_only: bool
    stp: str
    client_order_id: str | None

    def fingerprint(self) -> str:
        body = [
            self.market.symbol,
            self.side,
            self.type,
            self.price_ticks,
            self.quantity_lots,
            self.time_in_force,
            self.expire_time.isoformat() if self.expire_time else None,
            self.post_only,
            self.stp,
        ]
        return hashlib.sha256(json.dumps(body).encode()).hexdigest()


# Django builds an enum's ``values`` anew on every access.
SELF_TRADE_CHOICES = tuple(SelfTrade.values)
TIME_IN_FORCE_CHOICES = tuple(TimeInForce.values)


def _choice(value: Any, allowed: tuple[str, ...], field: str, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if value not in allowed:
        raise ValidationFailed(
            format_lazy(
                gettext_lazy("{field} must be one of {allowed}."),
                field=field,
                allowed=", ".join(allowed),
            ),
            details={field: "invalid_choice"},
        )
    return value


def market_check_accepting(market: Market) -> None:
    if market.status == MarketStatus.HALTED:
        raise MarketHalted(
            format_lazy(
                gettext_lazy("Market {symbol} is halted: only cancels are accepted."),
                symbol=market.symbol,
            )
        )
    if market.status == MarketStatus.CANCEL_ONLY:
        raise MarketHalted(
            format_lazy(
                gettext_lazy("Market {symbol} is in cancel-only mode."), symbol=market.symbol
            )
        )
    if market.status == MarketStatus.CLOSED:
        raise MarketClosed(
            format_lazy(gettext_lazy("Market {symbol} is closed."), symbol=market.symbol)
        )


def order_request_parse(
    *,
    market: Market,
    side: Any,
    type: Any = "limit",
    price: Any = None,
    quantity: Any,
    time_in_force: Any = None,
    expire_time: datetime | None = None,
    post_only: Any = False,
    stp: Any = None,
    client_order_id: Any = None,
) -> OrderRequest:
    side = _choice(side, (Side.BUY, Side.SELL), "side")
    order_type = _choice(type, (OrderType.LIMIT, OrderType.MARKET), "type")
    if not isinstance(post_only, bool):
        raise ValidationFailed(
            gettext_lazy("post_only must be true or false."), details={"post_only": "invalid"}
        )
    stp = _choice(stp, SELF_TRADE_CHOICES, "stp", default=SelfTrade.CANCEL_OLDEST)
    lots = quantity_to_lots(market, quantity)
    if order_type == OrderType.LIMIT:
        if price is None:
            raise ValidationFailed(
                gettext_lazy("A limit order needs a price."), details={"price": "required"}
            )
        ticks: int | None = price_to_ticks(market, price)
        tif = _choice(time_in_force, TIME_IN_FORCE_CHOICES, "time_in_force", default="GTC")
    else:
        if price is not None:
            raise ValidationFailed(
                gettext_lazy("A market order takes no price."), details={"price": "not_allowed"}
            )
        ticks = None
        tif = _choice(time_in_force, ("IOC", "FOK"), "time_in_force", default="IOC")
        if post_only:
            raise ValidationFailed(gettext_lazy("A market order cannot be post-only."))
    if post_only and tif not in ("GTC", "GTD"):
        raise ValidationFailed(gettext_lazy("post_only needs time_in_force GTC or GTD."))
    if tif == TimeInForce.GTD:
        if expire_time is None:
            raise ValidationFailed(
                gettext_lazy("GTD needs expire_time."), details={"expire_time": "required"}
            )
        if expire_time <= timezone.now():
            raise ValidationFailed(gettext_lazy("expire_time must be in the future."))
    elif expire_time is not None:
        raise ValidationFailed(gettext_lazy("expire_time is only for GTD orders."))
    if client_order_id is not None and (
        not isinstance(client_order_id, str) or not (1 <= len(client_order_id) <= 64)
    ):
        raise ValidationFailed(
            gettext_lazy("client_order_id must be a string of 1 to 64 characters.")
        )
    return OrderRequest(
        market=market,
        side=side,
        type=order_type,
        price_ticks=ticks,
        quantity_lots=lots,
        time_in_force=tif,
        expire_time=expire_time,
        post_only=post_only,
        stp=stp,
        client_order_id=client_order_id,
    )


def buy_hold_units(market: Market, ticks: int, lots: int) -> int:
    """Quote units a buy needs at worst: notional at ``ticks`` plus the larger fee rate.

    Fees are rounded up per trade, so each trade can cost up to one unit more than the fee on
    the total; a buy makes at most one trade per lot, hence ``+ lots``. What is not used is
    released when the order ends.
    """
    notional = notional_units(market, ticks, lots)
    rate = max(market.maker_fee_rate, market.taker_fee_rate)
    hold = notional + ledger.fee_for(notional=notional, rate=rate) + lots
    if hold >= MAX_HOLD_UNITS:
        raise ValidationFailed(
            gettext_lazy("The order is too large."), details={"quantity": "too_large"}
        )
    return hold


def _protection_ticks(market: Market, side: str) -> int:
    state = engine_state_get(market=market)
    band = market.price_band
    if side == Side.BUY:
        best = state.best_ask_ticks if state else None
        if best is None:
            raise NoLiquidity(
                format_lazy(
                    gettext_lazy("No asks in {symbol}: a market buy cannot be priced."),
                    symbol=market.symbol,
                )
            )
        return best + int((Decimal(best) * band).to_integral_value(rounding="ROUND_FLOOR"))
    best = state.best_bid_ticks if state else None
    if best is None:
        raise NoLiquidity(
            format_lazy(
                gettext_lazy("No bids in {symbol}: a market sell cannot be priced."),
                symbol=market.symbol,
            )
        )
    return max(1, best - int((Decimal(best) * band).to_integral_value(rounding="ROUND_FLOOR")))


def _existing_for_client_id(user: User, request: OrderRequest) -> Order | None:
    if request.client_order_id is None:
        return None
    existing = unique_row(Order.objects.filter(user=user, client_order_id=request.client_order_id))
    if existing is None:
        return None
    if existing.request_fingerprint != request.fingerprint():
        raise DuplicateClientOrderId(
            format_lazy(
                gettext_lazy("client_order_id {id} was used for a different order."),
                id=repr(request.client_order_id),
            ),
            details={"order_id": existing.id},
        )
    return existing


def ask_check(*, user: User, request: OrderRequest) -> None:
    """A provider's ask needs a live delivery endpoint in the market (the dead-man switch of
    ``exchange.delivery.endpoints``; buyers reselling are not concerned). One query, sells only."""
    if request.side == Side.SELL:
        endpoint_ask_check(user=user, market=request.market)


def order_hold(request: OrderRequest) -> tuple[int | None, str, int]:
    """(market-order protection ticks, hold asset, hold amount) for a new order; refuses a
    market that is not open."""
    market = request.market
    market_check_accepting(market)
    protection = None
    if request.type == OrderType.MARKET:
        protection = _protection_ticks(market, request.side)
    engine_ticks = request.price_ticks if protection is None else protection
    assert engine_ticks is not None
    if request.side == Side.BUY:
        return (
            protection,
            market.quote_currency,
            buy_hold_units(market, engine_ticks, request.quantity_lots),
        )
    return protection, market.symbol, request.quantity_lots * market.tokens_per_lot


def _order_new(
    user: User,
    request: OrderRequest,
    protection: int | None,
    hold_asset: str,
    hold_amount: int,
    capacity_listing_id: int | None = None,
) -> Order:
    return Order(
        user=user,
        market=request.market,
        client_order_id=request.client_order_id,
        request_fingerprint=request.fingerprint(),
        side=request.side,
        type=request.type,
        price_ticks=request.price_ticks,
        protection_ticks=protection,
        quantity_lots=request.quantity_lots,
        time_in_force=request.time_in_force,
        expire_time=request.expire_time,
        post_only=request.post_only,
        stp=request.stp,
        hold_asset=hold_asset,
        hold_amount=hold_amount,
        hold_remaining=hold_amount,
        capacity_listing_id=capacity_listing_id,
        maker_fee_rate=request.market.maker_fee_rate,
        taker_fee_rate=request.market.taker_fee_rate,
    )


def order_place_many(
    *, user: User, requests: list[OrderRequest]
) -> list[tuple[Order, bool] | Exception]:
    """Place a batch: one transaction for all of them when every order is new and covered.

    Otherwise (a refusal, a replayed client_order_id) each order is placed on its own, so each
    gets its own answer. Returns, per request, (order, created) or the error refusing it
    (an ``ExchangeError``; any other exception if placing it failed).
    """
    return _place_group([(user, request) for request in requests])


def _place_group(
    items: list[tuple[User, OrderRequest]],
) -> list[tuple[Order, bool] | Exception]:
    """``order_place_many`` for orders of any users (a batch, or concurrent single orders).

    An order that fails for another reason than a refusal (the database went away half-way)
    has that exception as its outcome: the orders placed before it keep their answers."""
    results: list[tuple[Order, bool] | Exception | None] = [None] * len(items)
    claimed = [(user.pk, r.client_order_id) for user, r in items if r.client_order_id is not None]
    fast = len(set(claimed)) == len(claimed)
    if fast and claimed:
        replayed = Q()
        for user_id, client_order_id in claimed:
            replayed |= Q(user_id=user_id, client_order_id=client_order_id)
        fast = not Order.objects.filter(replayed).exists()
    if fast:
        orders: list[Order] = []
        positions: list[int] = []
        for position, (user, request) in enumerate(items):
            try:
                ask_check(user=user, request=request)
                protection, hold_asset, hold_amount = order_hold(request)
            except ExchangeError as error:  # refused before anything is written
                results[position] = error
                continue
            orders.append(_order_new(user, request, protection, hold_asset, hold_amount))
            positions.append(position)
        try:
            if orders:
                with transaction.atomic(durable=True):
                    _journal_many(orders)
        except (ExchangeError, IntegrityError):
            pass  # fall back to one transaction per order, for an answer per order
        else:
            for market in {o.market_id: o.market for o in orders}.values():
                _wake(market)
            for position, order in zip(positions, orders, strict=True):
                results[position] = (order, True)
            return _all_answered(results)
    for position, (user, request) in enumerate(items):
        if results[position] is not None:
            continue
        try:
            results[position] = _order_place_one(user=user, request=request)
        except Exception as error:  # this order's answer; the others keep theirs
            results[position] = error
    return _all_answered(results)


def _wake(market: Market) -> None:
    """``engine_notify`` after an intake commit: the orders are accepted whatever happens
    here (a lost wake-up only delays them: runners also poll), so a failure is logged, not
    turned into an error for orders that are already on the journal."""
    try:
        engine_notify(market=market)
    except Exception:
        logger.exception("runner of %s not woken", market.symbol)


def _all_answered(
    results: list[tuple[Order, bool] | Exception | None],
) -> list[tuple[Order, bool] | Exception]:
    answered = [r for r in results if r is not None]
    assert len(answered) == len(results)
    return answered


# Columns an order is inserted with (the rest take their defaults): one array per column.
ORDER_COLUMNS = (
    ("user_id", "bigint"),
    ("market_id", "bigint"),
    ("client_order_id", "varchar"),
    ("request_fingerprint", "varchar"),
    ("side", "varchar"),
    ("type", "varchar"),
    ("price_ticks", "bigint"),
    ("protection_ticks", "bigint"),
    ("quantity_lots", "bigint"),
    ("filled_lots", "bigint"),
    ("time_in_force", "varchar"),
    ("expire_time", "timestamptz"),
    ("post_only", "boolean"),
    ("stp", "varchar"),
    ("status", "varchar"),
    ("cancel_reason", "varchar"),
    ("hold_asset", "varchar"),
    ("hold_amount", "bigint"),
    ("hold_remaining", "bigint"),
    ("maker_fee_rate", "numeric"),
    ("taker_fee_rate", "numeric"),
    ("cost", "bigint"),
    ("fee", "bigint"),
    ("capacity_listing_id", "bigint"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)


def _db_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _orders_insert(orders: list[Order]) -> None:
    """``bulk_create`` for new orders, as one set-based INSERT (Django's builds and adapts
    every field of every row in Python: most of a batch request's CPU)."""
    now = timezone.now()
    rows = []
    for order in orders:
        order.created_at = order.updated_at = now
        # enum members as their plain values: those go as one array literal (exchange.db)
        rows.append([_db_value(getattr(order, name)) for name, _ in ORDER_COLUMNS])
    ids = rows_insert(Order, ORDER_COLUMNS, rows)
    for order, order_id in zip(orders, ids, strict=True):
        order.id = order_id
        order._state.adding = False
        order._state.db = "default"


def _journal_many(orders: list[Order]) -> None:
    _orders_insert(orders)
    # One hold transaction per user in the group, netted per asset, naming that user's orders
    # only: a lone order keeps its own (order:ID), several share one (orders:ID,ID,...).
    # Each key is unique: every order is in exactly one group.
    by_user: dict[int, list[Order]] = {}
    for order in orders:
        by_user.setdefault(order.user_id, []).append(order)
    groups = []
    for mine in by_user.values():
        ids = sorted(o.id for o in mine)
        if len(ids) == 1:
            reference, key = f"order:{ids[0]}", f"order:{ids[0]}:hold"
        else:
            listed = f"orders:{','.join(map(str, ids))}"
            reference = listed if len(listed) <= 120 else f"orders:{ids[0]}..{ids[-1]} ({len(ids)})"
            key = f"orders:{ids[0]}:hold"
        holds = [
            ledger.HoldRequest(o.user, o.hold_asset, o.hold_amount, f"order:{o.id}", "")
            for o in mine
        ]
        groups.append(ledger.NettedHold(holds, reference, key))
    ledger.hold_place_netted(groups=groups)
    rows_insert(
        OrderCommand,
        (
            ("market_id", "bigint"),
            ("order_id", "bigint"),
            ("kind", "varchar"),
            ("created_at", "timestamptz"),
        ),
        [(o.market_id, o.id, CommandKind.NEW.value, o.created_at) for o in orders],
    )


def order_place(
    *, user: User, request: OrderRequest, capacity_listing_id: int | None = None
) -> tuple[Order, bool]:
    """Validate, hold and journal one order. Returns (order, created).

    Re-sending the same ``client_order_id`` with the same body returns the existing order and
    ``created=False``; with another body it raises ``DuplicateClientOrderId``.

    Concurrent calls in one process share a transaction (``orders.intake``: group commit); each
    still gets its own answer, as if it had been placed alone (a refusal sends the group back
    to one transaction per order). In the ledger, a user's orders placed in one group share
    one netted hold transaction (``_journal_many``).
    """
    if capacity_listing_id is not None:
        return _order_place_one(user=user, request=request, capacity_listing_id=capacity_listing_id)
    from orders.intake import group_place

    return group_place(user, request, _place_group)


def _order_place_one(
    *, user: User, request: OrderRequest, capacity_listing_id: int | None = None
) -> tuple[Order, bool]:
    """``order_place`` in a transaction of its own."""
    existing = _existing_for_client_id(user, request)
    if existing is not None:
        return existing, False
    market = request.market
    ask_check(user=user, request=request)
    protection, hold_asset, hold_amount = order_hold(request)
    try:
        with transaction.atomic(durable=True):
            order = order_journal(
                user=user,
                request=request,
                protection=protection,
                hold_asset=hold_asset,
                hold_amount=hold_amount,
                capacity_listing_id=capacity_listing_id,
            )
    except IntegrityError:
        # A concurrent request with the same client_order_id won the race.
        existing = _existing_for_client_id(user, request)
        if existing is None:
            raise
        return existing, False
    _wake(market)
    return order, True


def order_journal(
    *,
    user: User,
    request: OrderRequest,
    protection: int | None,
    hold_asset: str,
    hold_amount: int,
    capacity_listing_id: int | None = None,
) -> Order:
    """Insert the order, hold its funds and journal it. Runs inside the caller's transaction;
    the caller calls ``engine_notify`` after commit."""
    order = _order_new(user, request, protection, hold_asset, hold_amount, capacity_listing_id)
    order.save(force_insert=True)
    ledger.hold_place(
        user=user,
        asset=hold_asset,
        amount=hold_amount,
        reference=f"order:{order.id}",
        idempotency_key=f"order:{order.id}:hold",
    )
    OrderCommand.objects.create(market=request.market, order=order, kind=CommandKind.NEW)
    return order


def order_cancel(*, user: User, order_id: int) -> Order:
    """Journal a cancel for one of the user's open orders (accepted while halted)."""
    order = order_get(user=user, order_id=order_id)
    if order.status not in OPEN_STATUSES:
        raise OrderNotOpen(
            format_lazy(
                gettext_lazy("Order {id} is {status}: nothing to cancel."),
                id=order.id,
                status=order.status,
            )
        )
    with transaction.atomic(durable=True):
        already = OrderCommand.objects.filter(
            order=order, kind__in=(CommandKind.CANCEL, CommandKind.EXPIRE), seq__isnull=True
        ).exists()
        if not already:
            OrderCommand.objects.create(market=order.market, order=order, kind=CommandKind.CANCEL)
    engine_notify(market=order.market)
    return order


def order_cancel_all(*, user: User, market: Market | None = None) -> list[int]:
    """Journal a cancel for every open order of the user (in one market or all)."""
    orders = Order.objects.filter(user=user, status__in=OPEN_STATUSES)
    if market is not None:
        orders = orders.filter(market=market)
    pending_cancels = set(
        OrderCommand.objects.filter(
            order__in=orders, kind__in=(CommandKind.CANCEL, CommandKind.EXPIRE), seq__isnull=True
        ).values_list("order_id", flat=True)
    )
    targets = [
        (o.id, o.market_id) for o in orders.only("id", "market_id") if o.id not in pending_cancels
    ]
    with transaction.atomic(durable=True):
        OrderCommand.objects.bulk_create(
            [OrderCommand(market_id=m, order_id=o, kind=CommandKind.CANCEL) for o, m in targets]
        )
    for market_id in {m for _, m in targets}:
        engine_notify(market=Market.objects.get(id=market_id))
    return [o for o, _ in targets]


def engine_notify(*, market: Market) -> None:
    """Tell the in-process runner (if any) that the market has pending commands."""
    from exchange.runner.embedded import notify

    notify(market)


def order_wait(*, order: Order, timeout: float) -> Order:
    """Wait until the runner has processed the order, or ``timeout`` seconds pass."""
    return orders_wait(orders=[order], timeout=timeout)[0]


def order_cancel_wait(*, order: Order, timeout: float) -> Order:
    """Wait until a cancelled order has left the book (or ``timeout`` seconds pass)."""
    return orders_wait(orders=[order], timeout=timeout, settled=OPEN_STATUSES)[0]


def orders_wait(
    *,
    orders: list[Order],
    timeout: float,
    settled: tuple[str, ...] = (OrderStatus.PENDING,),
) -> list[Order]:
    """Wait for orders to leave the ``settled`` statuses (by default: ``pending``).

    The runner announces each commit (``exchange.runner.progress``); a waiting request sleeps
    until its market moves and only then re-reads its orders, so waiting costs no CPU; the
    requests of a process waiting at the same time share one read (``orders.waiting``), so
    many of them do not hammer the database.
    """
    deadline = time.monotonic() + timeout
    by_id = {order.id: order for order in orders}
    pending = {i for i, o in by_id.items() if o.status in settled}
    if not pending:
        return list(orders)
    markets = {by_id[i].market_id for i in pending}
    watched = list(pending)
    waiting.want(watched)
    try:
        while pending and time.monotonic() < deadline:
            version = progress_version(markets)  # before reading: no commit can slip between
            for order_id, fresh in waiting.read(pending).items():
                by_id[order_id] = fresh
                if fresh.status not in settled:
                    pending.discard(order_id)
            if pending:
                progress_wait(markets, since=version, timeout=deadline - time.monotonic())
    finally:
        waiting.unwant(watched)
    return [by_id[order.id] for order in orders]
