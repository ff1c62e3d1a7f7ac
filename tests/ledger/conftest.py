"""Ledger fixtures: a market, funded users, and a snapshot of every ledger row to compare."""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from exchange.ledger import services
from exchange.ledger.models import Account, LedgerTransaction, Posting
from exchange.markets.services import DEMO_MARKETS, market_create

SYMBOL = DEMO_MARKETS[0]["symbol"]  # QWEN3.6-PLUS-OUT-CNY, quote CNY
CNY = 100_000_000  # one yuan in ledger units


@pytest.fixture
def market(db: None):
    return market_create(**DEMO_MARKETS[0])


_keys = iter(range(1, 10**9))


def key(prefix: str = "k") -> str:
    return f"{prefix}:{next(_keys)}"


def fund(user: Any, amount: int, currency: str = "CNY") -> None:
    services.deposit_credit(
        user=user, currency=currency, amount=amount, reference="test", idempotency_key=key("dep")
    )


def issue(user: Any, market: Any, tokens: int) -> None:
    services.capacity_issue(
        user=user, market=market, tokens=tokens, reference="test", idempotency_key=key("cap")
    )


def ledger_state() -> tuple[Any, ...]:
    """Every ledger row that a refusal must leave as it was."""
    return (
        LedgerTransaction.objects.count(),
        Posting.objects.count(),
        sorted(
            Account.objects.values_list("id", "owner_id", "system", "asset_id", "available", "held")
        ),
    )


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Across pytest-xdist workers: one many-connection test at a time (max_connections=100)."""
    path = Path(tempfile.gettempdir()) / f"ledger-tests-{name}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
