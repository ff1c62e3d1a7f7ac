"""The matching engine: one price-time priority order book per market, in pure Python.

The engine is a pure function of its command sequence: the same commands give the same events,
byte for byte. It imports only the standard library (an import-linter contract keeps Django out),
reads no clock, draws no randomness and does no I/O.

Units: prices are integer ticks (> 0), quantities integer units (> 0); the service layer converts
decimals, ticks and lots.

Public API (stable)
===================

``Book()`` — an empty book for one market. Commands return a ``list`` of events in the order they
happen; for one ``new`` the taker's own final event (``filled`` / ``rest`` / ``cancel``) is last.

- ``book.new(id, account, side, type, price, qty, tif=None, post_only=False,
  stp="cancel_oldest") -> list[Event]``
  ``side`` is ``"buy"``/``"sell"``, ``type`` ``"limit"``/``"market"``, ``tif`` ``"GTC"``
  (default for limit) / ``"IOC"`` (default for market) / ``"FOK"``, ``stp`` ``"cancel_oldest"``
  / ``"cancel_newest"`` / ``"cancel_both"``. ``price`` is ignored (not validated) for market
  orders; pass ``None``. Ids, prices and quantities must be ``int`` (``bool`` is refused).
- ``book.cancel(id) -> list[Event]``
- ``book.apply(command: dict) -> list[Event]`` — the replay format
  ``{"op": "new"|"cancel"|"snapshot", ...fields}``. A ``new`` missing ``tif``/``post_only``/
  ``stp`` gets the defaults; an explicit ``null`` for them, an unknown key or an unknown ``op`` is
  ``invalid``. ``snapshot`` returns ``[("snapshot", bids, asks)]``.
- ``book.resting(id) -> int | None`` — remaining quantity of a resting order.
- ``book.best_bid()`` / ``book.best_ask() -> (price, total_qty, order_count) | None``
- ``book.l2(depth) -> (bids, asks)`` — lists of ``(price, total_qty, order_count)``, best first,
  at most ``depth`` levels each. Level totals are maintained incrementally, so this costs
  O(depth).
- ``book.level(side, price) -> (total_qty, order_count)`` — ``(0, 0)`` for an empty level.
- ``book.drain_changed() -> (bid_prices: set[int], ask_prices: set[int])`` — prices whose level
  was touched since the previous drain (a superset of those whose totals changed; read the new
  totals with ``level``). For L2 deltas: drain after a command or a batch.
- ``book.snapshot_orders() -> (bids, asks)`` — every resting order as ``(id, price, qty)`` in
  priority order (best price first, oldest first within a price).
- ``book.dump() -> bytes`` / ``Book.load(blob) -> Book`` — the whole state (resting orders with
  accounts, in priority order, and every used id) in the versioned format described in
  :mod:`exchange.engine.snapshot`; ``load`` raises ``SnapshotError`` (a ``ValueError``).
  Restoring and continuing gives the same events as never stopping. The change sets are not part
  of the state; a loaded book starts with none.
- ``book.state_hash() -> str`` — sha256 hex digest of the canonical snapshot payload.
- ``len(book)`` — number of resting orders.

Events are plain tuples (cheapest to build on the hot path):

- ``("trade", taker_id, maker_id, price, qty, taker_side)`` — at the maker's price
- ``("filled", id)`` — a maker right after the trade that empties it; the taker at the end
- ``("rest", id, price, remaining_qty)`` — the taker rests on the book
- ``("cancel", id, remaining_qty, reason)`` — reason ``"user"``, ``"ioc"``, ``"fok"``,
  ``"post_only"`` or ``"stp"``
- ``("reject", id_or_None, reason)`` — reason ``"invalid"``, ``"duplicate_id"`` or
  ``"unknown_order"``; the id is ``None`` when the command has no integer id
- ``("snapshot", bids, asks)`` — from ``apply({"op": "snapshot"})`` only; rows ``(id, price, qty)``

``exchange.engine.events.event_json(event)`` renders one event as the replay tool's JSON line.

Rules worth knowing
===================

- A rejected command changes nothing. Validation comes first, so a malformed command is
  ``invalid`` even if its id was used before; its id is not consumed and may be used later. The id
  of every accepted ``new`` is used forever, whatever became of the order (filled, cancelled,
  killed by FOK, post-only or self-trade prevention): reusing it is ``duplicate_id``.
- A market order's ``price`` is ignored entirely (any value, or absent).
- ``cancel`` of anything not resting (unknown, filled, cancelled) is ``unknown_order``.
- Self-trade prevention follows the taker's ``stp``. ``cancel_oldest`` cancels the resting order
  and matching goes on; ``cancel_newest`` cancels the taker's remainder; ``cancel_both`` cancels
  the resting order, then the taker's remainder.
- ``post_only`` is cancelled (``post_only``) when it would cross the best opposite price, even
  if that resting order is its own account's.
- ``FOK`` first checks, without changing anything, that its whole quantity would fill: resting
  orders of its own account are skipped under ``cancel_oldest`` and end the check under the other
  two modes.

Tools: ``python -m exchange.engine.replay [FILE]`` (JSON lines in and out) and
``python -m exchange.engine.bench`` (throughput, latency, golden fixture); see
``docs/performance.md``.
"""

from exchange.engine.book import (
    BUY,
    CANCEL_BOTH,
    CANCEL_NEWEST,
    CANCEL_OLDEST,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    SELL,
    Book,
    Event,
    apply_all,
)
from exchange.engine.events import event_json
from exchange.engine.snapshot import SnapshotError

__all__ = [
    "BUY",
    "CANCEL_BOTH",
    "CANCEL_NEWEST",
    "CANCEL_OLDEST",
    "FOK",
    "GTC",
    "IOC",
    "LIMIT",
    "MARKET",
    "SELL",
    "Book",
    "Event",
    "SnapshotError",
    "apply_all",
    "event_json",
]
