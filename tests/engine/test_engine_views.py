"""Market-data views: best bid/ask, L2, per-level totals, changed levels, lazy deletion."""

from __future__ import annotations

from exchange.engine import Book


def build() -> Book:
    book = Book()
    book.new(1, "a", "buy", "limit", 99, 5)
    book.new(2, "b", "buy", "limit", 99, 7)
    book.new(3, "a", "buy", "limit", 97, 1)
    book.new(4, "c", "sell", "limit", 101, 2)
    book.new(5, "c", "sell", "limit", 103, 4)
    return book


def test_best_bid_and_ask_are_price_total_and_count():
    book = build()

    assert book.best_bid() == (99, 12, 2)
    assert book.best_ask() == (101, 2, 1)
    assert Book().best_bid() is None
    assert Book().best_ask() is None


def test_l2_lists_levels_best_first_up_to_a_depth():
    book = build()

    assert book.l2(10) == ([(99, 12, 2), (97, 1, 1)], [(101, 2, 1), (103, 4, 1)])
    assert book.l2(1) == ([(99, 12, 2)], [(101, 2, 1)])
    assert book.l2(0) == ([], [])


def test_level_reports_totals_and_zero_for_an_empty_level():
    book = build()

    assert book.level("buy", 99) == (12, 2)
    assert book.level("sell", 103) == (4, 1)
    assert book.level("sell", 99) == (0, 0)


def test_drain_changed_lists_the_touched_prices_once_and_resets():
    book = build()
    assert book.drain_changed() == ({99, 97}, {101, 103})

    book.new(6, "d", "sell", "limit", 98, 13)  # takes 99 fully, rests at 98
    book.cancel(5)

    assert book.drain_changed() == ({99}, {98, 103})
    assert book.drain_changed() == (set(), set())
    assert book.level("buy", 99) == (0, 0)
    assert book.level("sell", 98) == (1, 1)


def test_trades_update_level_totals():
    book = build()

    book.new(6, "d", "sell", "limit", 99, 6)

    assert book.level("buy", 99) == (6, 1)
    assert book.resting(2) == 6
    assert book.resting(1) is None
    assert len(book) == 4


def test_many_cancels_behind_a_long_lived_order_keep_the_level_consistent():
    book = Book()
    book.new(1, "a", "sell", "limit", 100, 1)
    for order_id in range(2, 1_000):
        book.new(order_id, "b", "sell", "limit", 100, 1)
        book.cancel(order_id)

    assert book.level("sell", 100) == (1, 1)
    assert book.snapshot_orders() == ([], [(1, 100, 1)])
    assert len(book._asks.levels[-100][2]) < 20  # dead entries are compacted away

    book.new(1_000, "b", "sell", "limit", 100, 3)
    assert book.new(1_001, "c", "buy", "market", None, 4) == [
        ("trade", 1_001, 1, 100, 1, "buy"),
        ("filled", 1),
        ("trade", 1_001, 1_000, 100, 3, "buy"),
        ("filled", 1_000),
        ("filled", 1_001),
    ]


def test_cancelling_a_level_that_is_not_the_best_removes_only_that_level():
    book = build()

    book.cancel(3)
    book.cancel(5)

    assert book.l2(10) == ([(99, 12, 2)], [(101, 2, 1)])
    assert book.new(7, "z", "buy", "limit", 97, 1) == [("rest", 7, 97, 1)]
    assert book.l2(10) == ([(99, 12, 2), (97, 1, 1)], [(101, 2, 1)])


def test_load_starts_with_no_changed_levels_and_the_same_views():
    book = build()

    restored = Book.load(book.dump())

    assert restored.drain_changed() == (set(), set())
    assert restored.l2(10) == book.l2(10)
    assert restored.snapshot_orders() == book.snapshot_orders()
