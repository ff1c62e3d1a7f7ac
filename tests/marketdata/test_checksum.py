import json
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.engine import Book
from exchange.marketdata.book_feed import book_snapshot_build, book_update_build
from exchange.marketdata.checksum import book_checksum
from tests.marketdata.client import BookClient

CASES = json.loads((Path(__file__).parent / "fixtures" / "checksums.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_checksum_fixtures(case) -> None:
    def ints(levels, tick, lot):
        return [
            (int(Decimal(p) / Decimal(tick)), int(Decimal(q) / Decimal(lot))) for p, q in levels
        ]

    bids = ints(case["bids"], case["tick_size"], case["lot_size"])
    asks = ints(case["asks"], case["tick_size"], case["lot_size"])
    assert book_checksum(bids, asks) == case["checksum"]
    client = BookClient(case["tick_size"], case["lot_size"])
    client.on_message(
        {"type": "snapshot", "seq": 1, "bids": case["bids"], "asks": case["asks"],
         "checksum": case["checksum"]}
    )  # fmt: skip
    assert client.checksum() == case["checksum"]


def test_updates_rebuild_the_engine_book() -> None:
    book = Book()
    client = BookClient("1", "1")
    snapshot = book_snapshot_build(book, 0)
    client.on_message({"type": "snapshot", **_public(snapshot, with_count=True)})
    seq = 0
    import random

    rng = random.Random(5)
    for order_id in range(1, 3000):
        if rng.random() < 0.25 and len(book):
            book.cancel(rng.randrange(1, order_id))
        else:
            side = rng.choice(["buy", "sell"])
            book.new(order_id, f"a{rng.randint(1, 5)}", side, "limit", rng.randint(90, 110),
                     rng.randint(1, 20))  # fmt: skip
        bids, asks = book.drain_changed()
        if not bids and not asks:
            continue
        seq += 1
        update = book_update_build(book, bids, asks, seq)
        assert client.on_message({"type": "update", **_public(update)}) == "ok"
    engine_bids, engine_asks = book.l2(1000)
    assert client.levels() == (
        [(p, q) for p, q, _ in engine_bids],
        [(p, q) for p, q, _ in engine_asks],
    )


def _public(message, with_count=False):
    def rows(levels):
        return [[str(level[0]), str(level[1])] for level in levels]

    return {**message, "bids": rows(message["bids"]), "asks": rows(message["asks"])}
