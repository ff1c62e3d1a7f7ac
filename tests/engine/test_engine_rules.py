"""The matching rules of the issue, one behaviour per test."""

from __future__ import annotations

from typing import Any

import pytest

from exchange.engine import Book


def place(book: Book, order_id: int, **fields: Any) -> list[tuple[Any, ...]]:
    command: dict[str, Any] = {
        "op": "new",
        "id": order_id,
        "account": "alice",
        "side": "buy",
        "type": "limit",
        "price": 100,
        "qty": 10,
    }
    command.update(fields)
    return book.apply(command)


def book_with(*orders: tuple[int, str, str, int, int]) -> Book:
    """A book holding resting orders given as (id, account, side, price, qty)."""
    book = Book()
    for order_id, account, side, price, qty in orders:
        assert place(book, order_id, account=account, side=side, price=price, qty=qty) == [
            ("rest", order_id, price, qty)
        ]
    return book


# -- resting and price-time priority ---------------------------------------------------------


def test_limit_order_that_does_not_cross_rests():
    book = Book()

    assert place(book, 1, side="buy", price=99, qty=5) == [("rest", 1, 99, 5)]

    assert book.snapshot_orders() == ([(1, 99, 5)], [])
    assert book.resting(1) == 5


def test_buy_trades_best_ask_first_then_oldest_first_within_a_level():
    book = book_with(
        (1, "bob", "sell", 101, 5),
        (2, "bob", "sell", 100, 5),
        (3, "carol", "sell", 100, 5),
    )

    events = place(book, 4, side="buy", price=101, qty=12)

    assert events == [
        ("trade", 4, 2, 100, 5, "buy"),
        ("filled", 2),
        ("trade", 4, 3, 100, 5, "buy"),
        ("filled", 3),
        ("trade", 4, 1, 101, 2, "buy"),
        ("filled", 4),
    ]
    assert book.snapshot_orders() == ([], [(1, 101, 3)])


def test_sell_trades_best_bid_first_at_the_makers_price():
    book = book_with((1, "bob", "buy", 98, 5), (2, "bob", "buy", 99, 5))

    events = place(book, 3, side="sell", price=97, qty=7)

    assert events == [
        ("trade", 3, 2, 99, 5, "sell"),
        ("filled", 2),
        ("trade", 3, 1, 98, 2, "sell"),
        ("filled", 3),
    ]
    assert book.resting(1) == 3


def test_taker_stops_at_a_price_that_does_not_cross_and_rests_the_remainder():
    book = book_with((1, "bob", "sell", 100, 4), (2, "bob", "sell", 102, 4))

    events = place(book, 3, side="buy", price=101, qty=10)

    assert events == [("trade", 3, 1, 100, 4, "buy"), ("filled", 1), ("rest", 3, 101, 6)]
    assert book.snapshot_orders() == ([(3, 101, 6)], [(2, 102, 4)])


def test_partially_filled_maker_keeps_its_time_priority():
    book = book_with((1, "bob", "sell", 100, 10), (2, "carol", "sell", 100, 10))

    assert place(book, 3, qty=4) == [("trade", 3, 1, 100, 4, "buy"), ("filled", 3)]

    assert book.snapshot_orders() == ([], [(1, 100, 6), (2, 100, 10)])


def test_equal_price_crosses():
    book = book_with((1, "bob", "buy", 100, 3))

    assert place(book, 2, side="sell", price=100, qty=3) == [
        ("trade", 2, 1, 100, 3, "sell"),
        ("filled", 1),
        ("filled", 2),
    ]
    assert len(book) == 0


# -- market, IOC, FOK ------------------------------------------------------------------------


def test_market_order_ignores_price_and_cancels_its_remainder_ioc():
    book = book_with((1, "bob", "sell", 100, 3), (2, "bob", "sell", 500, 3))

    events = place(book, 3, type="market", price="ignored", qty=10)

    assert events == [
        ("trade", 3, 1, 100, 3, "buy"),
        ("filled", 1),
        ("trade", 3, 2, 500, 3, "buy"),
        ("filled", 2),
        ("cancel", 3, 4, "ioc"),
    ]


def test_market_order_without_price_on_an_empty_book_is_cancelled():
    book = Book()

    events = book.apply(
        {"op": "new", "id": 1, "account": "a", "side": "sell", "type": "market", "qty": 2}
    )

    assert events == [("cancel", 1, 2, "ioc")]


def test_ioc_limit_cancels_its_remainder():
    book = book_with((1, "bob", "sell", 100, 3))

    events = place(book, 2, tif="IOC", price=100, qty=5)

    assert events == [("trade", 2, 1, 100, 3, "buy"), ("filled", 1), ("cancel", 2, 2, "ioc")]
    assert book.snapshot_orders() == ([], [])


def test_fok_fills_when_the_whole_quantity_is_available():
    book = book_with((1, "bob", "sell", 100, 3), (2, "carol", "sell", 101, 3))

    events = place(book, 3, tif="FOK", price=101, qty=6)

    assert events == [
        ("trade", 3, 1, 100, 3, "buy"),
        ("filled", 1),
        ("trade", 3, 2, 101, 3, "buy"),
        ("filled", 2),
        ("filled", 3),
    ]


def test_fok_that_cannot_fill_does_nothing_and_is_cancelled():
    book = book_with((1, "bob", "sell", 100, 3), (2, "carol", "sell", 102, 3))
    before = book.snapshot_orders()

    assert place(book, 3, tif="FOK", price=101, qty=6) == [("cancel", 3, 6, "fok")]
    assert place(book, 4, tif="FOK", type="market", qty=7) == [("cancel", 4, 7, "fok")]
    assert place(book, 5, tif="FOK", side="sell", price=1, qty=1) == [("cancel", 5, 1, "fok")]

    assert book.snapshot_orders() == before


def test_fok_skips_own_orders_under_cancel_oldest_and_cancels_them_when_it_fills():
    book = book_with((1, "alice", "sell", 100, 5), (2, "bob", "sell", 100, 5))

    assert place(book, 3, tif="FOK", qty=6) == [("cancel", 3, 6, "fok")]
    assert book.resting(1) == 5

    assert place(book, 4, tif="FOK", qty=5) == [
        ("cancel", 1, 5, "stp"),
        ("trade", 4, 2, 100, 5, "buy"),
        ("filled", 2),
        ("filled", 4),
    ]


@pytest.mark.parametrize("stp", ["cancel_newest", "cancel_both"])
def test_fok_counts_only_what_precedes_an_own_order_under_other_modes(stp):
    book = book_with(
        (1, "bob", "sell", 100, 5), (2, "alice", "sell", 100, 5), (3, "bob", "sell", 100, 5)
    )
    before = book.state_hash()

    assert place(book, 4, tif="FOK", qty=6, stp=stp) == [("cancel", 4, 6, "fok")]
    assert book.snapshot_orders() == ([], [(1, 100, 5), (2, 100, 5), (3, 100, 5)])
    assert place(book, 5, tif="FOK", qty=5, stp=stp) == [
        ("trade", 5, 1, 100, 5, "buy"),
        ("filled", 1),
        ("filled", 5),
    ]
    assert before != book.state_hash()


# -- post-only -------------------------------------------------------------------------------


def test_post_only_that_would_cross_is_cancelled_without_trading():
    book = book_with((1, "bob", "sell", 100, 5))

    assert place(book, 2, post_only=True, price=100) == [("cancel", 2, 10, "post_only")]
    assert book.snapshot_orders() == ([], [(1, 100, 5)])


def test_post_only_that_would_cross_its_own_order_is_cancelled_too():
    book = book_with((1, "alice", "sell", 100, 5))

    assert place(book, 2, post_only=True, price=101) == [("cancel", 2, 10, "post_only")]


def test_post_only_that_does_not_cross_rests():
    book = book_with((1, "bob", "sell", 100, 5))

    assert place(book, 2, post_only=True, price=99) == [("rest", 2, 99, 10)]


# -- self-trade prevention --------------------------------------------------------------------


def test_cancel_oldest_cancels_the_resting_order_and_goes_on_matching():
    book = book_with(
        (1, "bob", "sell", 100, 2), (2, "alice", "sell", 100, 5), (3, "bob", "sell", 101, 5)
    )

    events = place(book, 4, price=101, qty=5)

    assert events == [
        ("trade", 4, 1, 100, 2, "buy"),
        ("filled", 1),
        ("cancel", 2, 5, "stp"),
        ("trade", 4, 3, 101, 3, "buy"),
        ("filled", 4),
    ]
    assert book.snapshot_orders() == ([], [(3, 101, 2)])


def test_cancel_oldest_can_empty_the_book_and_then_rest():
    book = book_with((1, "alice", "sell", 100, 5))

    assert place(book, 2, price=100, qty=3, stp="cancel_oldest") == [
        ("cancel", 1, 5, "stp"),
        ("rest", 2, 100, 3),
    ]


def test_cancel_newest_cancels_the_takers_remainder_and_keeps_the_resting_order():
    book = book_with((1, "bob", "sell", 100, 2), (2, "alice", "sell", 100, 5))

    events = place(book, 3, qty=5, stp="cancel_newest")

    assert events == [("trade", 3, 1, 100, 2, "buy"), ("filled", 1), ("cancel", 3, 3, "stp")]
    assert book.snapshot_orders() == ([], [(2, 100, 5)])


def test_cancel_both_cancels_the_resting_order_then_the_taker():
    book = book_with((1, "alice", "sell", 100, 5), (2, "bob", "sell", 100, 5))

    events = place(book, 3, qty=5, stp="cancel_both")

    assert events == [("cancel", 1, 5, "stp"), ("cancel", 3, 5, "stp")]
    assert book.snapshot_orders() == ([], [(2, 100, 5)])


def test_the_takers_stp_decides():
    book = Book()
    place(book, 1, side="sell", stp="cancel_newest")

    assert place(book, 2, stp="cancel_oldest") == [("cancel", 1, 10, "stp"), ("rest", 2, 100, 10)]


def test_market_order_meets_own_order_under_cancel_newest():
    book = book_with((1, "alice", "buy", 100, 5))

    assert place(book, 2, side="sell", type="market", qty=1, stp="cancel_newest") == [
        ("cancel", 2, 1, "stp")
    ]


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_removes_a_resting_order():
    book = book_with((1, "bob", "sell", 100, 5), (2, "bob", "sell", 100, 6))

    assert book.apply({"op": "cancel", "id": 1}) == [("cancel", 1, 5, "user")]
    assert book.snapshot_orders() == ([], [(2, 100, 6)])
    assert book.resting(1) is None


def test_cancel_of_a_partially_filled_order_reports_what_remains():
    book = book_with((1, "bob", "sell", 100, 5))
    place(book, 2, qty=2)

    assert book.cancel(1) == [("cancel", 1, 3, "user")]


@pytest.mark.parametrize("order_id", [1, 2, 3, 99])
def test_cancel_of_an_order_that_is_not_resting_is_rejected(order_id):
    book = book_with((1, "bob", "sell", 100, 5))
    place(book, 2, qty=5)  # fills 1, and 2 is filled
    place(book, 3, side="sell", price=105, qty=1)
    book.cancel(3)
    before = book.state_hash()

    assert book.cancel(order_id) == [("reject", order_id, "unknown_order")]
    assert book.state_hash() == before


# -- ids -------------------------------------------------------------------------------------


def test_a_reused_id_is_rejected_whatever_became_of_the_order():
    book = book_with((1, "bob", "sell", 100, 5))
    place(book, 2, qty=5)  # filled
    place(book, 3, side="sell", price=200)
    book.cancel(3)  # cancelled
    place(book, 4, type="market")  # cancelled ioc
    place(book, 5, side="sell", price=300)  # resting
    before = book.state_hash()

    for order_id in (1, 2, 3, 4, 5):
        assert place(book, order_id, price=1) == [("reject", order_id, "duplicate_id")]
    assert book.state_hash() == before


def test_the_id_of_an_invalid_command_is_not_consumed():
    book = Book()

    assert place(book, 1, qty=0) == [("reject", 1, "invalid")]
    assert place(book, 1) == [("rest", 1, 100, 10)]


def test_a_malformed_command_with_a_used_id_is_invalid_not_duplicate():
    book = book_with((1, "bob", "sell", 100, 5))

    assert place(book, 1, qty=-1) == [("reject", 1, "invalid")]


# -- validation ------------------------------------------------------------------------------

INVALID_FIELDS: list[dict[str, Any]] = [
    {"qty": 0},
    {"qty": -3},
    {"qty": True},
    {"qty": 1.0},
    {"qty": "5"},
    {"price": 0},
    {"price": -1},
    {"price": True},
    {"price": 100.0},
    {"price": None},
    {"side": "BUY"},
    {"side": None},
    {"type": "stop"},
    {"type": ["limit"]},
    {"account": ""},
    {"account": 5},
    {"account": None},
    {"tif": "GTD"},
    {"tif": None},
    {"tif": "gtc"},
    {"post_only": 1},
    {"post_only": "true"},
    {"post_only": None},
    {"stp": "none"},
    {"stp": None},
    {"stp": ["cancel_oldest"]},
    {"type": "market", "tif": "GTC"},
    {"type": "market", "post_only": True},
    {"type": "market", "post_only": True, "tif": "IOC"},
    {"tif": "IOC", "post_only": True},
    {"tif": "FOK", "post_only": True},
    {"client_id": "x"},
]


@pytest.mark.parametrize("fields", INVALID_FIELDS)
def test_malformed_new_is_rejected_invalid_and_changes_nothing(fields):
    book = book_with((1, "bob", "sell", 105, 5), (2, "bob", "buy", 95, 5))
    before = book.state_hash()

    assert place(book, 7, **fields) == [("reject", 7, "invalid")]
    assert book.state_hash() == before


@pytest.mark.parametrize("field", ["account", "side", "type", "qty", "price"])
def test_new_missing_a_required_field_is_invalid(field):
    book = Book()
    command = {
        "op": "new",
        "id": 3,
        "account": "a",
        "side": "buy",
        "type": "limit",
        "price": 1,
        "qty": 1,
    }
    del command[field]

    assert book.apply(command) == [("reject", 3, "invalid")]


@pytest.mark.parametrize("order_id", [None, True, False, 1.0, "1", [1]])
def test_an_id_that_is_not_an_int_is_rejected_with_a_null_id(order_id):
    book = Book()

    assert place(book, order_id) == [("reject", None, "invalid")]
    assert book.apply({"op": "cancel", "id": order_id}) == [("reject", None, "invalid")]


@pytest.mark.parametrize(
    "command",
    [
        None,
        [],
        "new",
        {},
        {"op": "trade", "id": 1},
        {"op": "cancel"},
        {"op": "cancel", "id": 1, "reason": "x"},
        {"op": "snapshot", "depth": 1},
        {"id": 1, "account": "a", "side": "buy", "type": "limit", "price": 1, "qty": 1},
    ],
)
def test_malformed_commands_are_rejected_invalid(command):
    book = book_with((1, "bob", "sell", 105, 5))
    before = book.state_hash()

    events = book.apply(command)

    reported_id = command.get("id") if isinstance(command, dict) else None
    assert events == [("reject", reported_id, "invalid")]
    assert book.state_hash() == before


def test_direct_api_validates_like_apply():
    book = Book()

    assert book.new(1, "a", "buy", "limit", 10, True) == [("reject", 1, "invalid")]
    assert book.new(1, "a", "buy", "market", None, 5, "GTC") == [("reject", 1, "invalid")]
    assert book.new(1, "a", "buy", "limit", 10, 5) == [("rest", 1, 10, 5)]


def test_snapshot_command_lists_every_resting_order_in_priority_order():
    book = book_with(
        (1, "a", "buy", 99, 1),
        (2, "a", "buy", 100, 2),
        (3, "a", "buy", 99, 3),
        (4, "a", "sell", 102, 4),
        (5, "a", "sell", 101, 5),
        (6, "a", "sell", 102, 6),
    )

    assert book.apply({"op": "snapshot"}) == [
        (
            "snapshot",
            [(2, 100, 2), (1, 99, 1), (3, 99, 3)],
            [(5, 101, 5), (4, 102, 4), (6, 102, 6)],
        )
    ]
