"""Book messages built from the engine's book (pure: no Django, no I/O).

The runner calls these after each batch; the lossy-feed test calls them directly.
"""

from __future__ import annotations

from typing import Any

from exchange.engine import Book
from exchange.marketdata.checksum import book_checksum

SNAPSHOT_DEPTH = 100


def book_update_build(
    book: Book, bids: set[int], asks: set[int], seq: int, time_ms: int | None = None
) -> dict[str, Any]:
    """Changed levels as [ticks, lots] (0 lots removes a level), the top-10 checksum and
    ``time``: when the book last changed (milliseconds since the epoch)."""
    top_bids, top_asks = book.l2(10)
    return {
        "seq": seq,
        "bids": [[price, book.level("buy", price)[0]] for price in sorted(bids, reverse=True)],
        "asks": [[price, book.level("sell", price)[0]] for price in sorted(asks)],
        "checksum": book_checksum(top_bids, top_asks),
        "time": time_ms,
    }


def book_snapshot_build(book: Book, seq: int, time_ms: int | None = None) -> dict[str, Any]:
    """The top levels as [ticks, lots, order count], for the cache readers snapshot from, and
    the time of the book's last change (milliseconds since the epoch, None if unknown)."""
    bids, asks = book.l2(SNAPSHOT_DEPTH)
    return {
        "seq": seq,
        "bids": [list(level) for level in bids],
        "asks": [list(level) for level in asks],
        "checksum": book_checksum(bids, asks),
        "time": time_ms,
    }
