"""One market's runner: pending commands → engine → one database transaction per batch.

Only the runner mutates a market's book and its orders' engine state. It takes pending
commands in id order, gives each the next journal ``seq``, applies it to the in-memory
``exchange.engine.Book``, and writes every effect of the batch — order states, trades, ledger
settlements and releases, command seqs, the market's engine state — in ONE transaction. If
anything fails, the transaction rolls back and the in-memory book is thrown away and rebuilt
from the database, so a crash at any point loses nothing and duplicates nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from exchange.engine import Book
from exchange.ledger import services as ledger
from exchange.marketdata.publisher import publish_batch
from exchange.markets.models import Market
from exchange.runner.sql import rows_update
from orders.models import (
    CommandKind,
    MarketEngineState,
    Order,
    OrderCommand,
    OrderStatus,
    Side,
    Trade,
)

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
RESTING = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)


def engine_price(order: Order) -> int:
    return order.protection_ticks if order.protection_ticks is not None else order.price_ticks


def engine_tif(order: Order) -> str:
    return "GTC" if order.time_in_force == "GTD" else order.time_in_force


@dataclass
class BatchEffects:
    trades: list[Trade] = field(default_factory=list)
    settlements: list[Any] = field(default_factory=list)
    touched: dict[int, Order] = field(default_factory=dict)
    closed: list[Order] = field(default_factory=list)
    market_events: list[list[Any]] = field(default_factory=list)


class MarketRunner:
    """Runs one market. Not thread-safe: exactly one runner per market may exist (lock held)."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.book: Book | None = None
        self.seq = 0

    # -- rebuild --------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Rebuild the book from committed resting orders, in their journal (priority) order."""
        book = Book()
        state, _ = MarketEngineState.objects.get_or_create(market=self.market)
        resting = (
            Order.objects.filter(market=self.market, status__in=RESTING)
            .order_by("engine_seq")
            .values_list(
                "id", "user_id", "side", "price_ticks", "quantity_lots", "filled_lots", "stp"
            )
        )
        for order_id, user_id, side, price, quantity, filled, stp in resting:
            events = book.new(
                order_id, str(user_id), side, "limit", price, quantity - filled, "GTC", False, stp
            )
            if events[-1][0] != "rest":  # the committed book was crossed: never expected
                raise RuntimeError(
                    f"rebuild of {self.market.symbol} did not rest order {order_id}: {events}"
                )
        book.drain_changed()
        self.book = book
        self.seq = state.seq

    # -- one batch ------------------------------------------------------------------------------
    def step(self, limit: int = BATCH_SIZE) -> int:
        """Process up to ``limit`` pending commands in one transaction. Returns how many."""
        try:
            return self._step(limit)
        except Exception:
            self.book = None  # the in-memory book may be ahead of the database: rebuild
            raise

    def _step(self, limit: int) -> int:
        with transaction.atomic():
            state = MarketEngineState.objects.select_for_update().filter(market=self.market).first()
            if state is None:
                state = MarketEngineState.objects.create(market=self.market)
            if self.book is None or state.seq != self.seq:
                self.rebuild()
            assert self.book is not None
            commands = list(
                OrderCommand.objects.filter(market=self.market, seq__isnull=True).order_by("id")[
                    :limit
                ]
            )
            if not commands:
                return 0
            order_ids = {c.order_id for c in commands}
            orders = Order.objects.select_related("user").in_bulk(order_ids)
            effects = BatchEffects()
            now = timezone.now()
            book = self.book
            seq = state.seq
            applied: list[tuple[OrderCommand, list[Any]]] = []
            for command in commands:
                seq += 1
                command.seq = seq
                command.processed_at = now
                order = orders[command.order_id]
                if command.kind == CommandKind.NEW:
                    if order.status != OrderStatus.PENDING:
                        raise RuntimeError(f"order {order.id} is {order.status}, not pending")
                    order.engine_seq = seq
                    events = book.new(
                        order.id,
                        str(order.user_id),
                        order.side,
                        "limit",
                        engine_price(order),
                        order.quantity_lots,
                        engine_tif(order),
                        order.post_only,
                        order.stp,
                    )
                else:
                    events = book.cancel(order.id)
                applied.append((command, events))
            # makers traded or cancelled (self-trade prevention) are not among the commands
            maker_ids = {
                event[2] if event[0] == "trade" else event[1]
                for _, events in applied
                for event in events
                if event[0] in ("trade", "cancel", "filled")
            } - orders.keys()
            if maker_ids:
                orders.update(Order.objects.select_related("user").in_bulk(maker_ids))
            for command, events in applied:
                self._apply_events(command, events, orders, effects)
            self._write(effects, state, seq, commands)
            self.seq = seq
            changed_bids, changed_asks = book.drain_changed()
            message = self._market_message(effects, changed_bids, changed_asks, seq)
            user_messages = self._user_messages(effects)
            market_id = self.market.id
            transaction.on_commit(
                lambda: publish_batch(
                    market_id=market_id, market_message=message, user_messages=user_messages
                )
            )
            return len(commands)

    def _apply_events(
        self,
        command: OrderCommand,
        events: list[Any],
        orders: dict[int, Order],
        effects: BatchEffects,
    ) -> None:
        market = self.market
        match_index = 0
        for event in events:
            kind = event[0]
            if kind == "trade":
                _, taker_id, maker_id, price, lots, taker_side = event
                taker, maker = orders[taker_id], orders[maker_id]
                buy, sell = (taker, maker) if taker_side == Side.BUY else (maker, taker)
                notional = price * lots * market.units_per_tick_lot
                buyer_rate = market.taker_fee_rate if buy is taker else market.maker_fee_rate
                seller_rate = market.taker_fee_rate if sell is taker else market.maker_fee_rate
                trade = Trade(
                    market=market,
                    seq=command.seq,
                    match_index=match_index,
                    taker_order=taker,
                    maker_order=maker,
                    buyer_id=buy.user_id,
                    seller_id=sell.user_id,
                    taker_side=taker_side,
                    price_ticks=price,
                    quantity_lots=lots,
                    notional=notional,
                    buyer_fee=0,
                    seller_fee=0,
                    created_at=command.processed_at,
                )
                match_index += 1
                effects.trades.append(trade)
                effects.settlements.append(
                    ledger.SettlementRequest(
                        market=market,
                        buyer=buy.user,
                        seller=sell.user,
                        tokens=lots * market.tokens_per_lot,
                        notional=notional,
                        buyer_fee_rate=buyer_rate,
                        seller_fee_rate=seller_rate,
                        reference=f"trade:{market.id}:{command.seq}:{trade.match_index}",
                        idempotency_key=f"trade:{market.id}:{command.seq}:{trade.match_index}",
                    )
                )
                for order in (taker, maker):
                    order.filled_lots += lots
                    order.cost += notional
                    effects.touched[order.id] = order
                    if order.status in (OrderStatus.OPEN, OrderStatus.PENDING):
                        order.status = OrderStatus.PARTIALLY_FILLED
                # tokens leave the seller's hold now; the buyer's quote is settled below
                sell.hold_remaining -= lots * market.tokens_per_lot
            elif kind == "filled":
                order = orders[event[1]]
                order.status = OrderStatus.FILLED
                effects.touched[order.id] = order
                effects.closed.append(order)
            elif kind == "rest":
                order = orders[event[1]]
                order.status = (
                    OrderStatus.PARTIALLY_FILLED if order.filled_lots else OrderStatus.OPEN
                )
                effects.touched[order.id] = order
            elif kind == "cancel":
                order = orders[event[1]]
                reason = event[3]
                if reason == "user" and command.kind == CommandKind.EXPIRE:
                    reason = "expired"
                order.status = OrderStatus.CANCELLED
                order.cancel_reason = reason
                effects.touched[order.id] = order
                effects.closed.append(order)
            elif kind == "reject":
                order = orders.get(event[1]) if event[1] is not None else None
                if command.kind == CommandKind.NEW and order is not None:
                    order.status = OrderStatus.REJECTED
                    order.cancel_reason = event[2]
                    effects.touched[order.id] = order
                    effects.closed.append(order)
                # a cancel of an order that already ended is a no-op

    def _write(
        self,
        effects: BatchEffects,
        state: MarketEngineState,
        seq: int,
        commands: list[OrderCommand],
    ) -> None:
        market = self.market
        if effects.settlements:
            results = ledger.trade_settle_many(settlements=effects.settlements)
            for trade, result in zip(effects.trades, results, strict=True):
                trade.buyer_fee = result.buyer_fee
                trade.seller_fee = result.seller_fee
                buy = trade.taker_order if trade.taker_side == Side.BUY else trade.maker_order
                sell = trade.maker_order if trade.taker_side == Side.BUY else trade.taker_order
                buy = effects.touched[buy.id]
                sell = effects.touched[sell.id]
                buy.hold_remaining -= trade.notional + result.buyer_fee
                buy.fee += result.buyer_fee
                sell.fee += result.seller_fee
            Trade.objects.bulk_create(effects.trades)
        releases = []
        for order in effects.closed:
            if order.hold_remaining > 0:
                releases.append(
                    ledger.HoldRequest(
                        user=order.user,
                        asset=order.hold_asset,
                        amount=order.hold_remaining,
                        reference=f"order:{order.id}",
                        idempotency_key=f"order:{order.id}:release",
                    )
                )
                order.hold_remaining = 0
        if releases:
            ledger.hold_release_many(releases=releases)
        now = timezone.now()
        for order in effects.touched.values():
            order.updated_at = now
            if order.hold_remaining < 0:
                raise RuntimeError(f"order {order.id} spent more than it held")
        touched = list(effects.touched.values())
        new_orders = [c.order_id for c in commands if c.kind == CommandKind.NEW]
        untouched_new = [i for i in new_orders if i not in effects.touched]
        if untouched_new:  # pragma: no cover - every new order ends with an event
            raise RuntimeError(f"orders without an outcome: {untouched_new}")
        if connection.vendor == "postgresql":
            rows_update(
                Order,
                [
                    ("status", "varchar"),
                    ("filled_lots", "bigint"),
                    ("cost", "bigint"),
                    ("fee", "bigint"),
                    ("hold_remaining", "bigint"),
                    ("cancel_reason", "varchar"),
                    ("engine_seq", "bigint"),
                    ("updated_at", "timestamptz"),
                ],
                [
                    (
                        o.id,
                        o.status,
                        o.filled_lots,
                        o.cost,
                        o.fee,
                        o.hold_remaining,
                        o.cancel_reason,
                        o.engine_seq,
                        o.updated_at,
                    )
                    for o in touched
                ],
            )
            rows_update(
                OrderCommand,
                [("seq", "bigint"), ("processed_at", "timestamptz")],
                [(c.id, c.seq, c.processed_at) for c in commands],
            )
        else:
            Order.objects.bulk_update(
                touched,
                [
                    "status",
                    "filled_lots",
                    "cost",
                    "fee",
                    "hold_remaining",
                    "cancel_reason",
                    "engine_seq",
                    "updated_at",
                ],
            )
            OrderCommand.objects.bulk_update(commands, ["seq", "processed_at"])
        best_bid, best_ask = self.book.best_bid(), self.book.best_ask()
        state.seq = seq
        state.best_bid_ticks = best_bid[0] if best_bid else None
        state.best_ask_ticks = best_ask[0] if best_ask else None
        if effects.trades:
            state.last_trade_ticks = effects.trades[-1].price_ticks
        state.save()
        del market

    def _market_message(
        self, effects: BatchEffects, bids: set[int], asks: set[int], seq: int
    ) -> dict[str, Any]:
        book = self.book
        assert book is not None
        return {
            "market": self.market.symbol,
            "seq": seq,
            "trades": [
                [t.seq, t.match_index, t.price_ticks, t.quantity_lots, t.taker_side]
                for t in effects.trades
            ],
            "bids": [[p, *book.level("buy", p)] for p in sorted(bids, reverse=True)],
            "asks": [[p, *book.level("sell", p)] for p in sorted(asks)],
        }

    def _user_messages(self, effects: BatchEffects) -> dict[int, list[dict[str, Any]]]:
        messages: dict[int, list[dict[str, Any]]] = {}
        for order in effects.touched.values():
            messages.setdefault(order.user_id, []).append(
                {
                    "kind": "order",
                    "id": order.id,
                    "status": order.status,
                    "filled_lots": order.filled_lots,
                }
            )
        for trade in effects.trades:
            for user_id in {trade.buyer_id, trade.seller_id}:
                messages.setdefault(user_id, []).append(
                    {
                        "kind": "fill",
                        "seq": trade.seq,
                        "index": trade.match_index,
                        "price_ticks": trade.price_ticks,
                        "quantity_lots": trade.quantity_lots,
                    }
                )
        return messages
