"""The runner coalesces public market data: at most one publication per window, nothing lost."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import override_settings

from exchange.marketdata.book_feed import book_snapshot_build
from exchange.marketdata.checksum import book_checksum
from exchange.marketdata.state import book_state_load
from exchange.runner import core
from exchange.runner.core import MarketRunner
from orders.models import MarketEngineState
from tests.orders.conftest import place

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a runner call and then its on-commit callbacks (the test's transaction never
    commits; the runner publishes from those callbacks)."""

    def run(call, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return call(*args, **kwargs)

    return run


@pytest.fixture
def published(monkeypatch) -> list[dict[str, Any]]:
    """Every market message the runner publishes (user updates are not collected)."""
    messages: list[dict[str, Any]] = []

    def capture(*, market_id: int, market_message: Any, user_messages: Any) -> None:
        if market_message is not None:
            messages.append(market_message)

    monkeypatch.setattr(core, "publish_batch", capture)
    return messages


@pytest.fixture
def external():
    """Orders are journalled but not processed: the test drives its own runner."""
    with override_settings(ENGINE_RUNNER="external", ORDER_WAIT_SECONDS=0):
        yield


def test_batches_inside_the_window_are_published_once_with_every_change(
    market, trader, fund, published, external, committed
) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=5_000_000, market=market)
    fund(buyer.user, cny=100)
    runner = MarketRunner(market, feed_window=3600.0)
    committed(runner.rebuild)
    start_seq = runner.feed_seq

    place(seller, side="sell", price="8.00", quantity="2")
    assert committed(runner.step) == 1
    assert len(published) == 1
    assert published[0]["book"]["seq"] == start_seq + 1
    assert published[0]["book"]["asks"] == [[800, 2000]]

    # three more batches inside the window: held back, then published as one message
    place(seller, side="sell", price="8.10", quantity="1")
    assert committed(runner.step) == 1
    place(buyer, side="buy", price="8.00", quantity="0.5")
    assert committed(runner.step) == 1
    place(buyer, side="buy", price="7.90", quantity="1")
    assert committed(runner.step) == 1
    assert len(published) == 1
    due = runner.feed_due()
    assert due is not None
    assert due > 0
    assert not runner.feed_flush()

    assert runner.feed_flush(force=True)
    assert len(published) == 2
    merged = published[1]
    assert merged["book"]["seq"] == start_seq + 2  # +1 per publication: no gap
    assert merged["book"]["asks"] == [[800, 1500], [810, 1000]]  # absolute, merged
    assert merged["book"]["bids"] == [[790, 1000]]
    assert [trade[1:3] for trade in merged["trades"]] == [[800, 500]]
    assert merged["top"] == {"bid": [790, 1000], "ask": [800, 1500], "last": 800}
    assert "1m" in merged["candles"]
    book = runner.book
    bids, asks = book.l2(10)
    assert merged["book"]["checksum"] == book_checksum(bids, asks)
    # readers (REST /book, websocket snapshots) see what was published, under the same seq
    # (with the time of the book's last change: the last batch's, as the update carried)
    stored = book_state_load(market_id=market.id)
    assert stored == book_snapshot_build(book, start_seq + 2, merged["book"]["time"])
    assert isinstance(stored["time"], int)
    # the seq is durable before it is published
    assert MarketEngineState.objects.get(market=market).book_seq >= start_seq + 2
    assert runner.feed_due() is None
    assert not runner.feed_flush(force=True)  # nothing left


def test_a_new_runner_skips_a_seq_only_when_subscribers_may_be_stale(
    market, trader, fund, published, external, committed
) -> None:
    seller = trader()
    fund(seller.user, tokens=5_000_000, market=market)
    first = MarketRunner(market, feed_window=3600.0)
    place(seller, side="sell", price="8.00", quantity="1")
    committed(first.step)
    last_published = published[-1]["book"]["seq"]

    # all was published: a takeover continues the sequence
    second = MarketRunner(market, feed_window=3600.0)
    place(seller, side="sell", price="8.20", quantity="1")
    committed(second.step)
    assert published[-1]["book"]["seq"] == last_published + 1
    # this change is held back (inside the window) and dies with the runner (kill -9)
    place(seller, side="sell", price="8.40", quantity="1")
    committed(second.step)
    assert published[-1]["book"]["seq"] == last_published + 1

    third = MarketRunner(market, feed_window=0.0)
    place(seller, side="sell", price="8.60", quantity="1")
    committed(third.step)
    update = published[-1]["book"]
    clients_know = last_published + 1
    assert update["seq"] > clients_know + 1  # a gap: every client resubscribes
    state = book_state_load(market_id=market.id)
    assert state["seq"] == update["seq"]
    assert [level[0] for level in state["asks"]] == [800, 820, 840, 860]


def test_the_loop_publishes_held_back_data_once_due(
    market, trader, fund, published, external, committed
) -> None:
    from exchange.runner.loop import RunnerLoop

    seller = trader()
    fund(seller.user, tokens=5_000_000, market=market)
    loop = RunnerLoop([market.symbol])
    loop.claim()
    runner = loop.runners[market.id]
    runner.feed_window = 3600.0
    place(seller, side="sell", price="8.00", quantity="1")
    committed(loop.run_once)
    count = len(published)
    place(seller, side="sell", price="8.30", quantity="1")
    committed(loop.run_once)
    assert len(published) == count  # held back
    runner.feed_published -= 3600.0  # the window has passed
    committed(loop.run_once)
    assert len(published) == count + 1
    assert published[-1]["book"]["asks"] == [[830, 1000]]
    loop.release()


def test_a_closed_candle_goes_out_before_the_next_period_is_merged(
    market, published, external, committed
) -> None:
    runner = MarketRunner(market, feed_window=3600.0)
    committed(runner.rebuild)
    runner.feed_published = time.monotonic()  # inside the window: held back
    runner._feed_add(set(), set(), [[1, 800, 10, "buy", 0]], {"1m": [60, 800, 800, 800, 800, 10]})
    runner._feed_add(set(), set(), [[2, 801, 10, "buy", 0]], {"1m": [60, 800, 801, 800, 801, 20]})
    assert published == []
    runner._feed_add(set(), set(), [[3, 810, 5, "buy", 0]], {"1m": [120, 810, 810, 810, 810, 5]})
    assert len(published) == 1  # the minute closed: its final state is not overwritten
    assert published[0]["candles"]["1m"] == [60, 800, 801, 800, 801, 20]
    assert [trade[0] for trade in published[0]["trades"]] == [1, 2]
    assert runner.feed_flush(force=True)
    assert published[1]["candles"]["1m"][0] == 120
    assert [trade[0] for trade in published[1]["trades"]] == [3]


def test_held_back_trades_survive_a_failed_batch(
    market, trader, fund, published, external, committed
) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=5_000_000, market=market)
    fund(buyer.user, cny=100)
    runner = MarketRunner(market, feed_window=3600.0)
    place(seller, side="sell", price="8.00", quantity="1")
    committed(runner.step)  # published at once (first change after a quiet spell)
    place(buyer, side="buy", price="8.00", quantity="0.5")
    committed(runner.step)  # a trade, held back
    before = len(published)
    runner.book = None  # what a failed batch leaves: the next step rebuilds from the database
    committed(runner.step)
    assert runner.feed_flush(force=True)
    assert len(published) == before + 1
    assert [trade[1:3] for trade in published[-1]["trades"]] == [[800, 500]]
