"""The live book state the runner keeps current for readers (REST ``/book``, websocket
snapshots): the top levels and the book sequence number, in the cache (Redis in production,
process memory in ``make run``), written after each batch commits."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache


def book_key(market_id: int) -> str:
    return f"marketdata:book:{market_id}"


def book_state_store(*, market_id: int, state: dict[str, Any]) -> None:
    cache.set(book_key(market_id), state, timeout=None)


def book_state_load(*, market_id: int) -> dict[str, Any] | None:
    return cache.get(book_key(market_id))


def ticker_key(market_id: int) -> str:
    return f"marketdata:ticker:{market_id}"


def ticker_forget(*, market_id: int) -> None:
    """The runner calls this after each batch: the next ticker read recomputes."""
    cache.delete(ticker_key(market_id))


def runner_seq_key(market_id: int) -> str:
    return f"runner:seq:{market_id}"


def runner_seq_store(*, market_id: int, seq: int) -> None:
    """After each commit: how far the runner got (requests waiting for orders watch it)."""
    cache.set(runner_seq_key(market_id), seq, timeout=None)
