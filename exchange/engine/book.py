"""The order book of one market and its price-time priority matching.

Hot-path records are plain mutable lists indexed by literal positions, because attribute access
and record construction dominate the cost of a Python matching loop:

- resting order: ``[qty, id, account, price, side]`` (``side`` is the owning :class:`_Side`);
  ``qty == 0`` marks an entry that was cancelled while it sat in a level's queue (lazy deletion).
- price level: ``[total_qty, count, queue, price]``; ``queue`` is a deque of orders in time
  priority that may also hold dead (``qty == 0``) entries; ``total_qty``/``count`` cover live
  orders only.

Each side keeps its levels in a dict keyed by a signed key (``price`` for bids, ``-price`` for
asks) and the keys in an ascending list, so the best level is always ``keys[-1]`` and removing it
is ``keys.pop()``.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Final

from exchange.engine import snapshot

BUY: Final = "buy"
SELL: Final = "sell"
LIMIT: Final = "limit"
MARKET: Final = "market"
GTC: Final = "GTC"
IOC: Final = "IOC"
FOK: Final = "FOK"
CANCEL_OLDEST: Final = "cancel_oldest"
CANCEL_NEWEST: Final = "cancel_newest"
CANCEL_BOTH: Final = "cancel_both"

# Internal codes; command strings may come from JSON and are not interned, so they are compared
# with == once during validation and with small ints afterwards.
_GTC, _IOC, _FOK = 0, 1, 2
_OLDEST, _NEWEST, _BOTH = 0, 1, 2

_NEGATIVE_INFINITY: Final = float("-inf")

Event = tuple[Any, ...]

_NEW_FIELDS: Final = frozenset(
    ("op", "id", "account", "side", "type", "price", "qty", "tif", "post_only", "stp")
)
_CANCEL_FIELDS: Final = frozenset(("op", "id"))


class _Side:
    """One side of the book: levels by signed key, the sorted keys, and changed prices."""

    __slots__ = ("changed", "keys", "levels", "name", "sign")

    def __init__(self, name: str, sign: int) -> None:
        self.name = name
        self.sign = sign
        self.levels: dict[int, list[Any]] = {}
        self.keys: list[int] = []
        self.changed: set[int] = set()

    def add(self, order: list[Any]) -> None:
        price = order[3]
        key = self.sign * price
        level = self.levels.get(key)
        if level is None:
            self.levels[key] = [order[0], 1, deque((order,)), price]
            insort(self.keys, key)
        else:
            level[0] += order[0]
            level[1] += 1
            level[2].append(order)
        self.changed.add(price)

    def remove(self, order: list[Any]) -> None:
        """Take a resting order out of its level (lazily: it stays queued with qty 0)."""
        price = order[3]
        key = self.sign * price
        level = self.levels[key]
        count = level[1] - 1
        if count:
            level[1] = count
            level[0] -= order[0]
            order[0] = 0
            queue = level[2]
            # Dead entries behind a long-lived front order would otherwise pile up forever.
            if len(queue) > 2 * count + 8:
                level[2] = deque([entry for entry in queue if entry[0]])
        else:
            order[0] = 0
            del self.levels[key]
            keys = self.keys
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[bisect_left(keys, key)]
        self.changed.add(price)

    def orders(self) -> Iterable[list[Any]]:
        """Live orders in priority order, best level first."""
        levels = self.levels
        for key in reversed(self.keys):
            for order in levels[key][2]:
                if order[0]:
                    yield order

    def level_rows(self, depth: int) -> list[tuple[int, int, int]]:
        if depth <= 0:
            return []
        levels = self.levels
        rows = []
        for key in reversed(self.keys[-depth:]):
            level = levels[key]
            rows.append((level[3], level[0], level[1]))
        return rows


def _invalid(order_id: Any) -> list[Event]:
    return [("reject", order_id if order_id.__class__ is int else None, "invalid")]


class Book:
    """The order book of one market. See the package docstring for the contract."""

    __slots__ = ("_asks", "_bids", "_orders", "_used")

    def __init__(self) -> None:
        self._orders: dict[int, list[Any]] = {}
        self._bids = _Side(BUY, 1)
        self._asks = _Side(SELL, -1)
        self._used: set[int] = set()

    # -- commands ---------------------------------------------------------------------------

    def new(
        self,
        id: Any,
        account: Any,
        side: Any,
        type: Any,
        price: Any,
        qty: Any,
        tif: Any = None,
        post_only: Any = False,
        stp: Any = CANCEL_OLDEST,
    ) -> list[Event]:
        """Submit an order; returns its events, the taker's own final event last."""
        if id.__class__ is not int:
            return [("reject", None, "invalid")]
        if (
            account.__class__ is not str
            or not account
            or qty.__class__ is not int
            or qty <= 0
            or post_only.__class__ is not bool
        ):
            return [("reject", id, "invalid")]
        if stp == "cancel_oldest":
            stp_code = _OLDEST
        elif stp == "cancel_newest":
            stp_code = _NEWEST
        elif stp == "cancel_both":
            stp_code = _BOTH
        else:
            return [("reject", id, "invalid")]
        if side == "buy":
            opposite = self._asks
            own = self._bids
        elif side == "sell":
            opposite = self._bids
            own = self._asks
        else:
            return [("reject", id, "invalid")]
        if type == "limit":
            if price.__class__ is not int or price <= 0:
                return [("reject", id, "invalid")]
            if tif is None or tif == "GTC":
                tif_code = _GTC
            elif tif == "IOC" and not post_only:
                tif_code = _IOC
            elif tif == "FOK" and not post_only:
                tif_code = _FOK
            else:
                return [("reject", id, "invalid")]
            bound: float = opposite.sign * price
        elif type == "market":
            if post_only:
                return [("reject", id, "invalid")]
            if tif is None or tif == "IOC":
                tif_code = _IOC
            elif tif == "FOK":
                tif_code = _FOK
            else:
                return [("reject", id, "invalid")]
            bound = _NEGATIVE_INFINITY
        else:
            return [("reject", id, "invalid")]

        used = self._used
        if id in used:
            return [("reject", id, "duplicate_id")]
        used.add(id)

        keys = opposite.keys
        if keys and keys[-1] >= bound:
            if post_only:
                return [("cancel", id, qty, "post_only")]
            if tif_code == _FOK and not self._fillable(opposite, account, qty, bound, stp_code):
                return [("cancel", id, qty, "fok")]
            match_events: list[Event] = []
            remaining = self._match(
                id, account, qty, bound, opposite, own.name, stp_code, match_events
            )
            if remaining <= 0:
                if not remaining:
                    match_events.append(("filled", id))
                return match_events
            events: list[Event] | None = match_events
        elif tif_code == _FOK:
            return [("cancel", id, qty, "fok")]
        else:
            remaining = qty
            events = None
        if tif_code == _GTC:
            # Inlined _Side.add: resting is the most common outcome.
            order = [remaining, id, account, price, own]
            self._orders[id] = order
            key: int = own.sign * price
            levels = own.levels
            level = levels.get(key)
            if level is None:
                levels[key] = [remaining, 1, deque((order,)), price]
                insort(own.keys, key)
            else:
                level[0] += remaining
                level[1] += 1
                level[2].append(order)
            own.changed.add(price)
            if events is None:
                return [("rest", id, price, remaining)]
            events.append(("rest", id, price, remaining))
        elif events is None:
            return [("cancel", id, remaining, "ioc")]
        else:
            events.append(("cancel", id, remaining, "ioc"))
        return events

    def cancel(self, id: Any) -> list[Event]:
        """Cancel a resting order."""
        if id.__class__ is not int:
            return [("reject", None, "invalid")]
        order = self._orders.pop(id, None)
        if order is None:
            return [("reject", id, "unknown_order")]
        qty = order[0]
        order[4].remove(order)
        return [("cancel", id, qty, "user")]

    def apply(self, command: Any) -> list[Event]:
        """Apply one command given as a dict ``{"op": ..., **fields}`` (the replay format)."""
        if command.__class__ is not dict:
            return [("reject", None, "invalid")]
        op = command.get("op")
        if op == "new":
            if not command.keys() <= _NEW_FIELDS:
                return _invalid(command.get("id"))
            tif = command.get("tif")
            if tif is None and "tif" in command:
                return _invalid(command.get("id"))
            return self.new(
                command.get("id"),
                command.get("account"),
                command.get("side"),
                command.get("type"),
                command.get("price"),
                command.get("qty"),
                tif,
                command.get("post_only", False),
                command.get("stp", CANCEL_OLDEST),
            )
        if op == "cancel":
            if not command.keys() <= _CANCEL_FIELDS:
                return _invalid(command.get("id"))
            return self.cancel(command.get("id"))
        if op == "snapshot" and len(command) == 1:
            bids, asks = self.snapshot_orders()
            return [("snapshot", bids, asks)]
        return _invalid(command.get("id"))

    # -- matching ---------------------------------------------------------------------------

    def _match(
        self,
        taker: int,
        account: str,
        remaining: int,
        bound: float,
        opposite: _Side,
        taker_side: str,
        stp_code: int,
        events: list[Event],
    ) -> int:
        """Trade the taker against the opposite side while it crosses.

        Returns the taker's remaining quantity, or -1 when self-trade prevention ended the taker
        (its ``stp`` cancel is then already in ``events``).
        """
        orders = self._orders
        levels = opposite.levels
        keys = opposite.keys
        changed = opposite.changed
        append = events.append
        while keys:
            key = keys[-1]
            if key < bound:
                break
            level = levels[key]
            queue = level[2]
            price = level[3]
            changed.add(price)
            while True:
                maker = queue[0]
                maker_qty = maker[0]
                if not maker_qty:
                    queue.popleft()
                    continue
                maker_id = maker[1]
                if maker[2] == account:
                    if stp_code == _NEWEST:
                        append(("cancel", taker, remaining, "stp"))
                        return -1
                    append(("cancel", maker_id, maker_qty, "stp"))
                elif maker_qty > remaining:
                    maker[0] = maker_qty - remaining
                    level[0] -= remaining
                    append(("trade", taker, maker_id, price, remaining, taker_side))
                    return 0
                else:
                    append(("trade", taker, maker_id, price, maker_qty, taker_side))
                    append(("filled", maker_id))
                    remaining -= maker_qty
                # The maker leaves the book: filled, or cancelled by self-trade prevention.
                del orders[maker_id]
                maker[0] = 0
                queue.popleft()
                count = level[1] - 1
                if count:
                    level[1] = count
                    level[0] -= maker_qty
                else:
                    keys.pop()
                    del levels[key]
                if stp_code == _BOTH and maker[2] == account:
                    append(("cancel", taker, remaining, "stp"))
                    return -1
                if not remaining:
                    return 0
                if not count:
                    break
        return remaining

    def _fillable(
        self, opposite: _Side, account: str, qty: int, bound: float, stp_code: int
    ) -> bool:
        """Whether a FOK taker would fill completely right now (no state is changed)."""
        levels = opposite.levels
        for key in reversed(opposite.keys):
            if key < bound:
                return False
            for order in levels[key][2]:
                resting_qty = order[0]
                if not resting_qty:
                    continue
                if order[2] == account:
                    if stp_code == _OLDEST:
                        continue
                    return False
                qty -= resting_qty
                if qty <= 0:
                    return True
        return False

    # -- views ------------------------------------------------------------------------------

    def resting(self, id: int) -> int | None:
        """Remaining quantity of a resting order, or None if it is not on the book."""
        order = self._orders.get(id)
        return None if order is None else order[0]

    def best_bid(self) -> tuple[int, int, int] | None:
        """``(price, total_qty, order_count)`` of the best bid level, or None."""
        return self._best(self._bids)

    def best_ask(self) -> tuple[int, int, int] | None:
        """``(price, total_qty, order_count)`` of the best ask level, or None."""
        return self._best(self._asks)

    @staticmethod
    def _best(side: _Side) -> tuple[int, int, int] | None:
        keys = side.keys
        if not keys:
            return None
        level = side.levels[keys[-1]]
        return (level[3], level[0], level[1])

    def l2(self, depth: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Aggregated levels ``(price, total_qty, order_count)``, best first: ``(bids, asks)``."""
        return self._bids.level_rows(depth), self._asks.level_rows(depth)

    def level(self, side: str, price: int) -> tuple[int, int]:
        """``(total_qty, order_count)`` at one price; ``(0, 0)`` when the level is empty."""
        book_side = self._bids if side == BUY else self._asks
        level = book_side.levels.get(book_side.sign * price)
        return (0, 0) if level is None else (level[0], level[1])

    def drain_changed(self) -> tuple[set[int], set[int]]:
        """Prices whose level changed since the last drain, as ``(bid_prices, ask_prices)``.

        A price may be listed although its totals ended where they started; read the current
        totals with :meth:`level`. Draining resets the sets.
        """
        bids = self._bids.changed
        asks = self._asks.changed
        self._bids.changed = set()
        self._asks.changed = set()
        return bids, asks

    def snapshot_orders(
        self,
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Every resting order as ``(id, price, qty)`` in priority order: ``(bids, asks)``."""
        return (
            [(order[1], order[3], order[0]) for order in self._bids.orders()],
            [(order[1], order[3], order[0]) for order in self._asks.orders()],
        )

    def __len__(self) -> int:
        """Number of resting orders."""
        return len(self._orders)

    # -- persistence ------------------------------------------------------------------------

    def _state(self) -> snapshot.State:
        return snapshot.State(
            bids=[(order[1], order[2], order[3], order[0]) for order in self._bids.orders()],
            asks=[(order[1], order[2], order[3], order[0]) for order in self._asks.orders()],
            used_ids=self._used,
        )

    def dump(self) -> bytes:
        """The whole engine state as a versioned blob (see :mod:`exchange.engine.snapshot`)."""
        return snapshot.encode(self._state())

    @classmethod
    def load(cls, blob: bytes) -> Book:
        """Rebuild a book from :meth:`dump` output; raises ``SnapshotError`` if it is unusable."""
        state = snapshot.decode(blob)
        book = cls()
        book._used = set(state.used_ids)
        for book_side, rows in ((book._bids, state.bids), (book._asks, state.asks)):
            for order_id, account, price, qty in rows:
                if order_id in book._orders or order_id not in book._used:
                    raise snapshot.SnapshotError(f"order {order_id} is duplicated or unused")
                order = [qty, order_id, account, price, book_side]
                book._orders[order_id] = order
                book_side.add(order)
        best_bid, best_ask = book.best_bid(), book.best_ask()
        if best_bid is not None and best_ask is not None and best_bid[0] >= best_ask[0]:
            raise snapshot.SnapshotError("the book is crossed")
        book._bids.changed.clear()
        book._asks.changed.clear()
        return book

    def state_hash(self) -> str:
        """sha256 hex digest of the canonical (uncompressed) state payload."""
        return hashlib.sha256(snapshot.canonical_payload(self._state())).hexdigest()


def apply_all(book: Book, commands: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Apply commands in order and return all their events (a convenience for tests and tools)."""
    events: list[Event] = []
    for command in commands:
        events.extend(book.apply(command))
    return events
