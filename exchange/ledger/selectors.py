"""Ledger reads: balances, postings, statements, and the audit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from exchange.ledger.models import Account, Posting


class Balance(NamedTuple):
    available: int
    held: int

    @property
    def total(self) -> int:
        return self.available + self.held


class AssetBalance(NamedTuple):
    asset: str
    kind: str
    available: int
    held: int

    @property
    def total(self) -> int:
        return self.available + self.held


def asset_codes_public() -> dict[str, str]:
    """Ledger code → the code the API shows, where they differ: a market's token asset by the
    market's base (``QWEN3.6-PLUS-OUT``), as ccxt keys balances — unless several markets share
    that base (their tokens are not interchangeable), then by the market's symbol."""
    from exchange.markets.models import Market

    rows = list(Market.objects.values_list("symbol", "base"))
    uses = Counter(base for _, base in rows)
    return {symbol: base for symbol, base in rows if uses[base] == 1 and base != symbol}


def asset_code_ledger(code: str) -> str:
    """The ledger code of a code the API shows (the inverse of ``asset_codes_public``)."""
    for ledger_code, public in asset_codes_public().items():
        if public == code:
            return ledger_code
    return code


def balance_get(*, user: Any, asset: str) -> Balance:
    row = Account.objects.filter(owner=user, asset_id=asset).values_list("available", "held")
    found = row.first()
    return Balance(*found) if found else Balance(0, 0)


def balance_list(*, user: Any) -> list[AssetBalance]:
    rows = (
        Account.objects.filter(owner=user)
        .order_by("asset_id")
        .values_list("asset_id", "asset__kind", "available", "held")
    )
    return [AssetBalance(*row) for row in rows]


def posting_list(*, user: Any, asset: str | None = None, kind: str | None = None) -> QuerySet:
    """The user's postings, newest first."""
    postings = Posting.objects.filter(account__owner=user).select_related("transaction")
    if asset:
        postings = postings.filter(asset_id=asset)
    if kind:
        postings = postings.filter(transaction__kind=kind)
    return postings.order_by("-id")


def statement_rows(*, user: Any, start: date, end: date) -> Iterator[Posting]:
    """The user's postings from ``start`` to ``end`` (inclusive, UTC days), oldest first."""
    zone = timezone.get_current_timezone()
    since = datetime.combine(start, time.min, tzinfo=zone)
    until = datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone)
    return (
        Posting.objects.filter(
            account__owner=user,
            transaction__created_at__gte=since,
            transaction__created_at__lt=until,
        )
        .select_related("transaction")
        .order_by("id")
        .iterator(chunk_size=2000)
    )


# --- audit --------------------------------------------------------------------------------------
@dataclass
class AuditReport:
    accounts: int = 0
    transactions: int = 0
    postings: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def is_ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        head = (
            f"ledger audit: {self.accounts} accounts, {self.transactions} transactions, "
            f"{self.postings} postings: "
        )
        if self.is_ok:
            return head + "OK"
        lines = [head + f"{len(self.problems)} PROBLEM(S)"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


_LIMIT = 50  # problems listed per check; the counts say how many there are in all

_CHECKS: list[tuple[str, str]] = [
    (
        "cached balance differs from its postings",
        """
        SELECT a.id, a.owner_id, a.system, a.asset_id, a.available, a.held,
               COALESCE(p.available, 0), COALESCE(p.held, 0)
          FROM ledger_account a
          LEFT JOIN (
                SELECT account_id,
                       SUM(CASE WHEN bucket = 'available' THEN amount ELSE 0 END) AS available,
                       SUM(CASE WHEN bucket = 'held' THEN amount ELSE 0 END) AS held
                  FROM ledger_posting GROUP BY account_id
          ) p ON p.account_id = a.id
         WHERE a.available <> COALESCE(p.available, 0) OR a.held <> COALESCE(p.held, 0)
         ORDER BY a.id
        """,
    ),
    (
        "user balance is negative",
        """
        SELECT id, owner_id, asset_id, available, held FROM ledger_account
         WHERE owner_id IS NOT NULL AND (available < 0 OR held < 0) ORDER BY id
        """,
    ),
    (
        "asset does not sum to zero over all postings",
        """
        SELECT asset_id, SUM(amount) FROM ledger_posting
         GROUP BY asset_id HAVING SUM(amount) <> 0 ORDER BY asset_id
        """,
    ),
    (
        "transaction does not sum to zero for an asset",
        """
        SELECT transaction_id, asset_id, SUM(amount) FROM ledger_posting
         GROUP BY transaction_id, asset_id HAVING SUM(amount) <> 0
         ORDER BY transaction_id, asset_id
        """,
    ),
    (
        "transaction has fewer than two postings",
        """
        SELECT t.id, COUNT(p.id) FROM ledger_transaction t
          LEFT JOIN ledger_posting p ON p.transaction_id = t.id
         GROUP BY t.id HAVING COUNT(p.id) < 2 ORDER BY t.id
        """,
    ),
    (
        "posting's asset differs from its account's, or its amount is zero",
        """
        SELECT p.id, p.asset_id, a.asset_id, p.amount FROM ledger_posting p
          JOIN ledger_account a ON a.id = p.account_id
         WHERE p.asset_id <> a.asset_id OR p.amount = 0
            OR (a.owner_id IS NULL AND p.bucket <> 'available')
         ORDER BY p.id
        """,
    ),
    # --- delivery escrow (exchange.delivery.escrow): the lots behind the ESCROW accounts ----
    (
        "escrow account differs from its lots' outstanding escrow",
        """
        SELECT c.currency, COALESCE(a.available, 0), COALESCE(l.outstanding, 0)
          FROM (SELECT DISTINCT quote_currency AS currency FROM markets_market
                UNION SELECT asset_id FROM ledger_account WHERE system = 'escrow') c
          LEFT JOIN ledger_account a
                 ON a.owner_id IS NULL AND a.system = 'escrow' AND a.asset_id = c.currency
          LEFT JOIN (
                SELECT m.quote_currency AS currency,
                       SUM(l.escrow_units - l.released_units - l.credited_units - l.moved_units)
                           AS outstanding
                  FROM delivery_escrow_lot l JOIN markets_market m ON m.id = l.market_id
                 GROUP BY m.quote_currency
          ) l ON l.currency = c.currency
         WHERE COALESCE(a.available, 0) <> COALESCE(l.outstanding, 0)
         ORDER BY c.currency
        """,
    ),
    (
        "lot breaks its token identity or has negative escrow",
        """
        SELECT id, bought_tokens, delivered_tokens, credited_tokens, unconsumed_tokens,
               moved_tokens, reserved_tokens,
               escrow_units - released_units - credited_units - moved_units
          FROM delivery_escrow_lot
         WHERE delivered_tokens + credited_tokens + unconsumed_tokens + moved_tokens
               + reserved_tokens > bought_tokens
            OR LEAST(delivered_tokens, credited_tokens, unconsumed_tokens, moved_tokens,
                     reserved_tokens) < 0
            OR escrow_units - released_units - credited_units - moved_units < 0
            OR released_units > earned_units
            OR (closed_at IS NOT NULL
                AND (delivered_tokens + credited_tokens + unconsumed_tokens + moved_tokens
                         <> bought_tokens
                     OR escrow_units <> released_units + credited_units + moved_units))
            OR earned_units + credited_units + moved_units <> div(
                   escrow_units::numeric
                       * (delivered_tokens + credited_tokens + unconsumed_tokens + moved_tokens),
                   bought_tokens)
         ORDER BY id
        """,
    ),
    (
        # Every way tokens leave a lot moves them out of the holder's balance in the same
        # transaction, so a holder's open lots never promise more than it holds (it may hold
        # more: tokens issued directly, or bought before escrow existed).
        "holder's open lots promise more tokens than its balance",
        """
        SELECT l.holder_id, m.symbol, l.remaining, COALESCE(a.available + a.held, 0)
          FROM (SELECT holder_id, market_id,
                       SUM(bought_tokens - delivered_tokens - credited_tokens
                           - unconsumed_tokens - moved_tokens) AS remaining
                  FROM delivery_escrow_lot WHERE closed_at IS NULL
                 GROUP BY holder_id, market_id) l
          JOIN markets_market m ON m.id = l.market_id
          LEFT JOIN ledger_account a ON a.owner_id = l.holder_id AND a.asset_id = m.symbol
         WHERE l.remaining > COALESCE(a.available + a.held, 0)
         ORDER BY l.holder_id, m.symbol
        """,
    ),
    (
        "lot's reserved tokens differ from its open reservations",
        """
        SELECT l.id, l.reserved_tokens, COALESCE(r.tokens, 0)
          FROM delivery_escrow_lot l
          LEFT JOIN (
                SELECT p.lot_id, SUM(p.tokens) AS tokens
                  FROM delivery_escrow_reservationpart p
                  JOIN delivery_escrow_reservation r ON r.id = p.reservation_id
                 WHERE r.status = 'open'
                 GROUP BY p.lot_id
          ) r ON r.lot_id = l.id
         WHERE l.reserved_tokens <> COALESCE(r.tokens, 0)
         ORDER BY l.id
        """,
    ),
]


def audit_run() -> AuditReport:
    """Recompute every balance from the postings and check every invariant, on one snapshot."""
    report = AuditReport()
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            # One consistent snapshot while writers carry on.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute(
            "SELECT (SELECT COUNT(*) FROM ledger_account), "
            "(SELECT COUNT(*) FROM ledger_transaction), (SELECT COUNT(*) FROM ledger_posting)"
        )
        report.accounts, report.transactions, report.postings = cursor.fetchone()
        for title, sql in _CHECKS:
            cursor.execute(sql)
            rows = cursor.fetchall()
            report.problems += [f"{title}: {_describe(title, row)}" for row in rows[:_LIMIT]]
            if len(rows) > _LIMIT:
                report.problems.append(f"{title}: … and {len(rows) - _LIMIT} more")
    return report


def _describe(title: str, row: tuple[Any, ...]) -> str:
    if title.startswith("cached"):
        account_id, owner, system, asset, available, held, true_available, true_held = row
        holder = system or f"user {owner}"
        return (
            f"account {account_id} ({holder} {asset}): cached available={available} "
            f"held={held}, postings say available={true_available} held={true_held}"
        )
    return ", ".join(str(value) for value in row)
