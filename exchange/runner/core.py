"""One market's runner: pending commands → engine → one database transaction per batch.

Only the runner mutates a market's book and its orders' engine state. It takes pending
commands in id order, gives each the next journal ``seq``, applies it to the in-memory
``exchange.engine.Book``, and writes every effect of the batch — order states, trades, ledger
settlements and releases, command seqs, the market's engine state — in ONE transaction. If
anything fails, the transaction rolls back and the in-memory book is thrown away and rebuilt
from the database, so a crash at any point loses nothing and duplicates nothing.

The hot path works on plain rows (``OrderRow``), not model instances, and writes with a few
set-based statements: the runner's durable throughput is what bounds the exchange.

Public market data is coalesced (``FeedBuffer``): after each commit the batch's trades, changed
book levels and candles join the market's buffer, which is published as ONE ``market.batch``
event at most once per ``FEED_COALESCE_MS`` (the first change after a quiet spell goes out at
once). Book updates carry absolute level quantities, so merging batches loses nothing; ``seq``
counts published updates. The book state REST and snapshots read is stored after every commit,
and private order updates and fills are published after every commit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from exchange.db import array_param, server_bound_cursor, unique_row
from exchange.delivery.escrow.lots import SaleInput, trade_lots_plan, trade_lots_write
from exchange.engine import Book
from exchange.ledger import services as ledger
from exchange.marketdata.book_feed import book_snapshot_build, book_update_build
from exchange.marketdata.candles import candles_apply
from exchange.marketdata.publisher import publish_batch
from exchange.marketdata.state import (
    book_state_load,
    book_state_store,
    ticker_forget,
)
from exchange.markets.models import Market, MarketStatus
from exchange.metrics import (
    RUNNER_BATCH_COMMANDS,
    RUNNER_BATCH_SECONDS,
    RUNNER_COMMIT_SECONDS,
    RUNNER_LAG_SECONDS,
)
from exchange.runner.progress import progress_announce
from exchange.runner.sql import rows_insert, rows_update
from exchange.times import time_ms
from orders.models import (
    CommandKind,
    MarketEngineState,
    Order,
    OrderCommand,
    OrderStatus,
    Trade,
)

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000
RESTING = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
NEW, CANCEL, EXPIRE = CommandKind.NEW.value, CommandKind.CANCEL.value, CommandKind.EXPIRE.value
PENDING, OPEN, PARTIAL = "pending", "open", "partially_filled"
FILLED, CANCELLED, REJECTED = "filled", "cancelled", "rejected"
HALTED = "market_halted"
UNDELIVERABLE = "undeliverable"


class UndeliverableSales(Exception):
    """A batch matched sell orders whose tokens no buyer could consume (expired lots, ended
    capacity, tokens without lots): the batch is rolled back and run again with them
    cancelled first."""

    def __init__(self, order_ids: set[int]) -> None:
        super().__init__(sorted(order_ids))
        self.order_ids = order_ids


def engine_price(order: Any) -> int:
    return order.protection_ticks if order.protection_ticks is not None else order.price_ticks


def engine_tif(order: Any) -> str:
    return "GTC" if order.time_in_force == "GTD" else order.time_in_force


class UserRef(NamedTuple):
    """What the ledger needs of a user: the primary key."""

    pk: int


ORDER_FIELDS = (
    "id",
    "user_id",
    "side",
    "price_ticks",
    "protection_ticks",
    "quantity_lots",
    "filled_lots",
    "time_in_force",
    "post_only",
    "stp",
    "status",
    "hold_asset",
    "hold_remaining",
    "cost",
    "fee",
    "cancel_reason",
    "engine_seq",
    "maker_fee_rate",
    "taker_fee_rate",
)


class OrderRow:
    """An order's fields the runner reads and writes."""

    __slots__ = (*ORDER_FIELDS, "updated_at")

    def __init__(self, values: tuple[Any, ...]) -> None:
        for name, value in zip(ORDER_FIELDS, values, strict=True):
            setattr(self, name, value)

    @property
    def user(self) -> UserRef:
        return UserRef(self.user_id)


def orders_load(ids: set[int]) -> dict[int, OrderRow]:
    # thousands of ids: one array parameter instead of an IN list built in Python
    placeholder, value = array_param(list(ids), "bigint")
    columns = ", ".join(connection.ops.quote_name(name) for name in ORDER_FIELDS)
    table = connection.ops.quote_name(Order._meta.db_table)
    with server_bound_cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {table} WHERE id = ANY({placeholder})",  # noqa: S608  # nosec B608
            [value],
        )
        return {row[0]: OrderRow(row) for row in cursor.fetchall()}


class TradeRow(NamedTuple):
    seq: int
    match_index: int
    taker_id: int
    maker_id: int
    buyer_id: int
    seller_id: int
    taker_side: str
    price_ticks: int
    quantity_lots: int
    notional: int


@dataclass
class BatchEffects:
    trades: list[TradeRow] = field(default_factory=list)
    fees: list[tuple[int, int]] = field(default_factory=list)
    settlements: list[Any] = field(default_factory=list)
    touched: dict[int, OrderRow] = field(default_factory=dict)
    closed: list[OrderRow] = field(default_factory=list)
    trade_ids: list[int] = field(default_factory=list)
    candles: dict[str, list[int]] = field(default_factory=dict)


class FeedBuffer:
    """Committed public changes not yet published (see the module docstring)."""

    def __init__(self) -> None:
        self.bids: set[int] = set()
        self.asks: set[int] = set()
        self.trades: list[list[Any]] = []
        self.candles: dict[str, list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self.bids or self.asks or self.trades or self.candles)


class MarketRunner:
    """Runs one market. Not thread-safe: exactly one runner per market may exist (lock held).

    ``feed_window`` (seconds): the shortest interval between two public publications; None
    reads ``FEED_COALESCE_MS`` (0 publishes after every batch).
    """

    def __init__(self, market: Market, *, feed_window: float | None = None) -> None:
        self.market = market
        self.book: Book | None = None
        self.seq = 0
        if feed_window is None:
            feed_window = settings.FEED_COALESCE_MS / 1000
        self.feed_window = feed_window
        self.feed = FeedBuffer()
        self.feed_seq = 0
        self.feed_published = float("-inf")  # time.monotonic() of the last publication
        self.book_time: int | None = None  # the book's last change, ms since the epoch
        # this market's series (exchange.metrics), looked up once
        symbol = market.symbol
        self.batch_commands = RUNNER_BATCH_COMMANDS.labels(symbol)
        self.batch_seconds = RUNNER_BATCH_SECONDS.labels(symbol)
        self.commit_seconds = RUNNER_COMMIT_SECONDS.labels(symbol)
        self.lag = RUNNER_LAG_SECONDS.labels(symbol)

    # -- rebuild --------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Rebuild the book from committed resting orders, in their journal (priority) order."""
        book = Book()
        state, _ = MarketEngineState.objects.get_or_create(market=self.market)
        resting = (
            Order.objects.filter(market=self.market, status__in=RESTING)
            .order_by("engine_seq")
            .values_list("id", "user_id", "side", "price_ticks", "quantity_lots", "filled_lots")
        )
        for (
            order_id,
            user_id,
            side,
            price,
            quantity,
            filled,
        ) in resting:
            events = book.new(order_id, str(user_id), side, "limit", price, quantity - filled)
            if events[-1][0] != "rest":  # the committed book was crossed: never expected
                raise RuntimeError(f"rebuilding {self.market.symbol}: {order_id} did not rest")
        book.drain_changed()
        self.book = book
        self.seq = state.seq
        # self.feed is kept: it holds only committed changes (trades and candles must still go
        # out; its levels are read from this rebuilt, committed book when it is published)
        market_id = self.market.id
        snapshot = book_snapshot_build(book, state.book_seq)
        try:
            published = book_state_load(market_id=market_id)
        except Exception:  # the cache is down: assume the worst
            logger.warning("could not read the published book of %s", self.market.symbol)
            published = None
        self.feed_seq = state.book_seq
        same = published is not None and all(
            published.get(name) == value for name, value in snapshot.items() if name != "time"
        )
        # the time of the last change: as published, or else the last batch's (no earlier)
        self.book_time = (
            published.get("time")
            if same and published is not None
            else (time_ms(state.updated_at) if state.updated_at else None)
        )
        if not same:
            # Subscribers hold a book this runner never saw (changes that died unpublished with
            # a previous runner): skip one seq so that they all resync, and store a snapshot
            # under the new seq once this transaction commits.
            self.feed_seq = state.book_seq + 1
            state.book_seq = self.feed_seq
            MarketEngineState.objects.filter(pk=state.pk).update(book_seq=self.feed_seq)
        transaction.on_commit(lambda: self._readers_refresh(book=True), robust=True)

    # -- one batch ------------------------------------------------------------------------------
    def step(self, limit: int = BATCH_SIZE) -> int:
        """Process up to ``limit`` pending commands in one transaction. Returns how many."""
        refused: set[int] = set()
        while True:
            try:
                started = time.perf_counter()
                applied = self._step(limit, refused)
                if applied:
                    self.batch_commands.observe(applied)
                    self.batch_seconds.observe(time.perf_counter() - started)
                return applied
            except UndeliverableSales as undeliverable:
                # Rare (the ask outlived its tokens before the expiry tasks ran): the batch
                # was rolled back; it runs again with those asks cancelled before matching,
                # as self-trade prevention cancels within the batch.
                self.book = None
                if undeliverable.order_ids <= refused:
                    raise RuntimeError(f"orders {refused} cancelled, traded again") from None
                refused |= undeliverable.order_ids
            except Exception:
                self.book = None  # the in-memory book may be ahead of the database: rebuild
                raise

    def _step(self, limit: int, refused: set[int]) -> int:
        with transaction.atomic():
            state = unique_row(
                MarketEngineState.objects.select_for_update().filter(market=self.market)
            )
            if state is None:
                state = MarketEngineState.objects.create(market=self.market)
            if self.book is None or state.seq != self.seq:
                self.rebuild()
                state.book_seq = self.feed_seq  # rebuild() moved it on
            book = self.book
            assert book is not None
            # The pending index churns (each command leaves it within a second); a bitmap
            # scan re-reads every dead entry until VACUUM comes, an index scan marks them
            # dead as it passes and stops at the LIMIT.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_bitmapscan = off")
            rows = list(
                OrderCommand.objects.filter(market=self.market, seq__isnull=True)
                .order_by("id")
                .values_list("id", "order_id", "kind", "created_at")[:limit]
            )
            if not rows:
                self.lag.set(0.0)  # nothing waits
                return 0
            self.lag.set(max((timezone.now() - rows[0][3]).total_seconds(), 0.0))
            commands = [row[:3] for row in rows]
            if refused:
                commands = self._refusals_journal(refused, commands)
            orders = orders_load({order_id for _, order_id, _ in commands})
            now = timezone.now()
            seq = state.seq
            applied: list[tuple[int, str, list[Any]]] = []
            new = book.new
            # A market halted after an order was accepted must not match it: staff status
            # changes are read in the batch's transaction, so no new order slips past a halt.
            accepting = (
                unique_row(
                    Market.objects.filter(id=self.market.id).values_list("status", flat=True)
                )
                == MarketStatus.OPEN
            )
            for _, order_id, kind in commands:
                seq += 1
                order = orders[order_id]
                if kind == NEW:
                    if order.status != PENDING:
                        raise RuntimeError(f"order {order.id} is {order.status}, not pending")
                    if not accepting or order_id in refused:
                        # never reaches the book; the journal export leaves it out
                        reason = HALTED if not accepting else UNDELIVERABLE
                        events = [("cancel", order.id, order.quantity_lots, reason)]
                        applied.append((seq, kind, events))
                        continue
                    order.engine_seq = seq
                    events = new(
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
                    events = book.cancel(order_id)
                    if order_id in refused:
                        events = [
                            (*event[:3], UNDELIVERABLE) if event[0] == "cancel" else event
                            for event in events
                        ]
                applied.append((seq, kind, events))
            # makers traded or cancelled (self-trade prevention) are not among the commands
            others = {
                event[2] if event[0] == "trade" else event[1]
                for _, _, events in applied
                for event in events
                if event[0] != "rest" and event[0] != "reject"
            } - orders.keys()
            if others:
                orders.update(orders_load(others))
            effects = BatchEffects()
            for command_seq, kind, events in applied:
                self._apply_events(command_seq, kind, events, orders, effects)
            changed_bids, changed_asks = book.drain_changed()
            # The seq the next book publication will carry is durable before it is published,
            # so a restarted runner always continues above it (see rebuild()).
            if changed_bids or changed_asks or self.feed.bids or self.feed.asks:
                state.book_seq = self.feed_seq + 1
            self._write(effects, state, seq, commands, now)
            self.seq = seq
            moment = time_ms(now)
            trades = [
                [trade_id, t.price_ticks, t.quantity_lots, t.taker_side, moment]
                for trade_id, t in zip(effects.trade_ids, effects.trades, strict=True)
            ]
            candles = effects.candles
            user_messages = self._user_messages(effects, moment)
            market_id = self.market.id

            def after_commit() -> None:
                self.commit_seconds.observe(time.perf_counter() - written)
                # Each step on its own: a cache outage must not cost the waiting requests
                # their wake-up nor the users their private updates.
                try:
                    self._feed_add(changed_bids, changed_asks, trades, candles, moment=moment)
                except Exception:
                    logger.exception("public data of %s not stored", self.market.symbol)
                # after the REST state: what woken requests read next must be current
                try:
                    progress_announce(market_id=market_id, seq=seq)
                except Exception:
                    logger.exception("progress of %s not announced", self.market.symbol)
                if user_messages:
                    publish_batch(
                        market_id=market_id, market_message=None, user_messages=user_messages
                    )

            transaction.on_commit(after_commit, robust=True)
            written = time.perf_counter()  # what remains of the batch is its commit
            return len(commands)

    def _refusals_journal(
        self, refused: set[int], commands: list[tuple[int, int, str]]
    ) -> list[tuple[int, int, str]]:
        """Journal a cancel of each refused resting order, run before the batch's commands
        (their seq comes first, so a replay of the journal cancels them before matching too).
        Refused orders that are new in this batch are cancelled in place instead."""
        new_here = {order_id for _, order_id, kind in commands if kind == NEW}
        rows = OrderCommand.objects.bulk_create(
            OrderCommand(market=self.market, order_id=order_id, kind=EXPIRE)
            for order_id in sorted(refused - new_here)
        )
        return [(row.id, row.order_id, EXPIRE) for row in rows] + commands

    def _apply_events(
        self,
        command_seq: int,
        kind: str,
        events: list[Any],
        orders: dict[int, OrderRow],
        effects: BatchEffects,
    ) -> None:
        market = self.market
        per_tick_lot = market.units_per_tick_lot
        tokens_per_lot = market.tokens_per_lot
        touched = effects.touched
        match_index = 0
        for event in events:
            name = event[0]
            if name == "trade":
                _, taker_id, maker_id, price, lots, taker_side = event
                taker, maker = orders[taker_id], orders[maker_id]
                buy, sell = (taker, maker) if taker_side == "buy" else (maker, taker)
                notional = price * lots * per_tick_lot
                reference = f"trade:{market.id}:{command_seq}:{match_index}"
                effects.trades.append(
                    TradeRow(
                        command_seq,
                        match_index,
                        taker_id,
                        maker_id,
                        buy.user_id,
                        sell.user_id,
                        taker_side,
                        price,
                        lots,
                        notional,
                    )
                )
                effects.settlements.append(
                    ledger.SettlementRequest(
                        market=market,
                        buyer=buy.user,
                        seller=sell.user,
                        tokens=lots * tokens_per_lot,
                        notional=notional,
                        buyer_fee_rate=buy.taker_fee_rate if buy is taker else buy.maker_fee_rate,
                        seller_fee_rate=(
                            sell.taker_fee_rate if sell is taker else sell.maker_fee_rate
                        ),
                        reference=reference,
                        idempotency_key=reference,
                    )
                )
                match_index += 1
                for order in (taker, maker):
                    order.filled_lots += lots
                    order.cost += notional
                    touched[order.id] = order
                    if order.status == OPEN or order.status == PENDING:
                        order.status = PARTIAL
                sell.hold_remaining -= lots * tokens_per_lot
            elif name == "filled":
                order = orders[event[1]]
                order.status = FILLED
                touched[order.id] = order
                effects.closed.append(order)
            elif name == "rest":
                order = orders[event[1]]
                order.status = PARTIAL if order.filled_lots else OPEN
                touched[order.id] = order
            elif name == "cancel":
                order = orders[event[1]]
                reason = event[3]
                if reason == "user" and kind == EXPIRE:
                    reason = "expired"
                order.status = CANCELLED
                order.cancel_reason = reason
                touched[order.id] = order
                effects.closed.append(order)
            elif name == "reject" and kind == NEW and event[1] in orders:
                # only a duplicate id could get here: the database makes ids unique
                order = orders[event[1]]
                order.status = REJECTED
                order.cancel_reason = event[2]
                touched[order.id] = order
                effects.closed.append(order)
            # a cancel of an order that already ended is rejected by the engine: a no-op

    def _write(
        self,
        effects: BatchEffects,
        state: MarketEngineState,
        seq: int,
        commands: list[tuple[int, int, str]],
        now: datetime,
    ) -> None:
        market = self.market
        trades = effects.trades
        touched = effects.touched
        # Delivery: the part of each trade the seller covers with lots it holds is a resale
        # (paid to the seller, the lots move); the rest is paid into escrow. One query locks
        # the sellers' open lots (before any balance row: the global lock order).
        lot_plan = trade_lots_plan(
            market_id=market.id,
            sales=[
                SaleInput(
                    t.buyer_id,
                    t.seller_id,
                    t.maker_id if t.taker_side == "buy" else t.taker_id,
                    t.price_ticks,
                    request.tokens,
                    t.notional,
                    request.seller_fee_rate,
                )
                for t, request in zip(trades, effects.settlements, strict=True)
            ],
            now=now,
        )
        if lot_plan.refused:
            raise UndeliverableSales(lot_plan.refused)
        effects.settlements = [
            request._replace(escrow_notional=escrowed) if escrowed else request
            for request, escrowed in zip(effects.settlements, lot_plan.escrow, strict=True)
        ]
        # Fees are deterministic (ceil(notional × rate), the ledger's own fee_for), so the
        # leftover holds are known before posting: settlements and releases go to the ledger in
        # one call, which locks every balance row once, in the global order. The seller fee of
        # an escrowed part is charged when escrow is released.
        for trade, request in zip(trades, effects.settlements, strict=True):
            buyer_fee = ledger.fee_for(notional=trade.notional, rate=request.buyer_fee_rate)
            seller_fee = ledger.fee_for(
                notional=trade.notional - request.escrow_notional, rate=request.seller_fee_rate
            )
            effects.fees.append((buyer_fee, seller_fee))
            if trade.taker_side == "buy":
                buy, sell = touched[trade.taker_id], touched[trade.maker_id]
            else:
                buy, sell = touched[trade.maker_id], touched[trade.taker_id]
            buy.hold_remaining -= trade.notional + buyer_fee
            buy.fee += buyer_fee
            sell.fee += seller_fee
        leftovers = []
        for order in effects.closed:
            if order.hold_remaining > 0:
                leftovers.append(
                    ledger.Leftover(order.user_id, order.hold_asset, order.hold_remaining)
                )
                order.hold_remaining = 0
        first_seq = state.seq + 1
        results = ledger.trades_settle_and_release(
            settlements=effects.settlements,
            leftovers=leftovers,
            release_reference=f"runner:{market.symbol}:{first_seq}-{seq}",
            release_key=f"runner:{market.id}:{first_seq}:release",
        )
        if results != effects.fees:
            raise RuntimeError("ledger fees differ from the runner's")  # pragma: no cover
        if trades:
            effects.trade_ids = rows_insert(
                Trade,
                [
                    ("market_id", "bigint"),
                    ("seq", "bigint"),
                    ("match_index", "integer"),
                    ("taker_order_id", "bigint"),
                    ("maker_order_id", "bigint"),
                    ("buyer_id", "bigint"),
                    ("seller_id", "bigint"),
                    ("taker_side", "varchar"),
                    ("price_ticks", "bigint"),
                    ("quantity_lots", "bigint"),
                    ("notional", "bigint"),
                    ("buyer_fee", "bigint"),
                    ("seller_fee", "bigint"),
                    ("created_at", "timestamptz"),
                ],
                [
                    (market.id, t.seq, t.match_index, t.taker_id, t.maker_id, t.buyer_id,
                     t.seller_id, t.taker_side, t.price_ticks, t.quantity_lots, t.notional,
                     buyer_fee, seller_fee, now)
                    for t, (buyer_fee, seller_fee) in zip(trades, effects.fees, strict=True)
                ],
            )  # fmt: skip
            trade_lots_write(
                plan=lot_plan, market_id=market.id, trade_ids=effects.trade_ids, now=now
            )
            effects.candles = candles_apply(
                market_id=market.id,
                moment=int(now.timestamp()),
                trades=[(t.price_ticks, t.quantity_lots) for t in trades],
                per_tick_lot=market.units_per_tick_lot,
            )
        for order in touched.values():
            if order.hold_remaining < 0:
                raise RuntimeError(f"order {order.id} spent more than it held")
        undecided = [i for _, i, kind in commands if kind == NEW and i not in touched]
        if undecided:  # pragma: no cover - every new order ends with an event
            raise RuntimeError(f"orders without an outcome: {undecided}")
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
                )
                for o in touched.values()
            ],
            constants={"updated_at": now},
        )
        rows_update(
            OrderCommand,
            [("seq", "bigint")],
            [(command_id, first_seq + i) for i, (command_id, _, _) in enumerate(commands)],
            constants={"processed_at": now},
        )
        best_bid, best_ask = self.book.best_bid(), self.book.best_ask()
        state.seq = seq
        state.best_bid_ticks = best_bid[0] if best_bid else None
        state.best_ask_ticks = best_ask[0] if best_ask else None
        if trades:
            state.last_trade_ticks = trades[-1].price_ticks
        state.save()

    # -- public feed ----------------------------------------------------------------------------
    def _feed_add(
        self,
        bids: set[int],
        asks: set[int],
        trades: list[list[Any]],
        candles: dict[str, list[int]],
        *,
        moment: int | None = None,
    ) -> None:
        """A committed batch's public changes join the buffer (published now if due).
        ``moment``: the batch's time (milliseconds since the epoch)."""
        if (bids or asks) and moment is not None:
            self.book_time = moment
        held = self.feed.candles
        if any(interval in held and held[interval][0] != v[0] for interval, v in candles.items()):
            # a new candle period began: the closed candle's final state goes out first
            self.feed_flush(force=True)
        feed = self.feed
        feed.bids |= bids
        feed.asks |= asks
        feed.trades += trades
        feed.candles.update(candles)
        if not self.feed_flush() and (bids or asks or trades):
            # REST readers see every commit at once, under the last published seq: book
            # updates carry absolute levels, and the next one holds every level changed since,
            # so a client applying it to this newer snapshot is right.
            self._readers_refresh(book=bool(bids or asks))

    def _readers_refresh(self, *, book: bool) -> None:
        """What REST and websocket snapshots read: the book under the last published seq (if
        it changed), and a ticker to recompute."""
        if book and self.book is not None:
            state = book_snapshot_build(self.book, self.feed_seq, self.book_time)
            book_state_store(market_id=self.market.id, state=state)
        ticker_forget(market_id=self.market.id)

    def feed_due(self) -> float | None:
        """Seconds until the buffered changes may be published (0: now), None if none wait."""
        if not self.feed:
            return None
        return max(0.0, self.feed_published + self.feed_window - time.monotonic())

    def feed_flush(self, *, force: bool = False) -> bool:
        """Publish the buffered changes if the window allows (or ``force``). Call only between
        batches: levels are read from the book, which then holds exactly what was committed."""
        due = self.feed_due()
        if due is None or (due > 0 and not force) or self.book is None:
            return False
        feed, self.feed = self.feed, FeedBuffer()
        self.feed_published = time.monotonic()
        book = self.book
        market_id = self.market.id
        book_update = None
        if feed.bids or feed.asks:
            self.feed_seq += 1
            book_update = book_update_build(
                book, feed.bids, feed.asks, self.feed_seq, self.book_time
            )
        best_bid, best_ask = book.best_bid(), book.best_ask()
        publish_batch(
            market_id=market_id,
            market_message={
                "market": self.market.symbol,
                # wall clock, for the feed's delivery lag (exchange_feed_delivery_lag_seconds)
                "published_at": time.time(),
                "book": book_update,
                "trades": feed.trades,
                "top": {
                    "bid": list(best_bid[:2]) if best_bid else None,
                    "ask": list(best_ask[:2]) if best_ask else None,
                    "last": feed.trades[-1][1] if feed.trades else None,
                },
                "candles": feed.candles,
            },
            user_messages={},
        )
        try:  # readers' state after the message is out: a cache outage must not lose trades
            self._readers_refresh(book=book_update is not None)
        except Exception:
            logger.exception("book state of %s not stored", self.market.symbol)
        return True

    def _user_messages(self, effects: BatchEffects, moment: int) -> dict[int, list[dict[str, Any]]]:
        """Each user's order updates and fills of the batch (``moment``: its time in ms)."""
        symbol = self.market.symbol
        messages: dict[int, list[dict[str, Any]]] = {}
        for order in effects.touched.values():
            messages.setdefault(order.user_id, []).append(
                {
                    "kind": "order",
                    "market": symbol,
                    "id": order.id,
                    "status": order.status,
                    "filled_lots": order.filled_lots,
                    "cancel_reason": order.cancel_reason or None,
                    "time": moment,
                }
            )
        for trade_id, trade in zip(effects.trade_ids, effects.trades, strict=True):
            for user_id, side in ((trade.buyer_id, "buy"), (trade.seller_id, "sell")):
                messages.setdefault(user_id, []).append(
                    {
                        "kind": "fill",
                        "market": symbol,
                        "trade_id": trade_id,
                        "side": side,
                        "price_ticks": trade.price_ticks,
                        "quantity_lots": trade.quantity_lots,
                        "liquidity": "taker" if trade.taker_side == side else "maker",
                        "time": moment,
                    }
                )
        return messages
