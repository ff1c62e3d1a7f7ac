"""Moving cached balances: the only code that locks ledger balance rows.

Lock order (global, so concurrent movers never deadlock): user accounts by id, then system
accounts by id. System accounts (fee revenue, Stripe clearing) are the hottest rows, so they are
taken last.

One conditional ``UPDATE`` moves every balance: a user row (and the ESCROW account, which only
holds what buyers paid in) is only changed when it stays non-negative
(``WHERE available + delta >= 0``), never read-then-written. If any row is
refused, ``InsufficientFunds`` is raised and the caller's savepoint undoes the other rows.
"""

from __future__ import annotations

from decimal import Decimal

from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy

from exchange.db import server_bound_cursor
from exchange.errors import InsufficientFunds, ValidationFailed
from exchange.ledger.models import Account
from exchange.ledger.units import BIGINT_MAX, amount_display, is_currency

# Lock in the global order (the MATERIALIZED CTE with ORDER BY … FOR UPDATE takes
# the row locks one by one in that order), then update every row in the same statement.
_MOVE_POSTGRESQL = """
WITH delta AS MATERIALIZED (
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS d(id, available, held)
), locked AS MATERIALIZED (
    SELECT account.id FROM ledger_account account
     WHERE account.id = ANY(%s::bigint[])
     ORDER BY account.owner_id IS NULL, account.id
       FOR UPDATE
)
UPDATE ledger_account account
   SET available = account.available + delta.available, held = account.held + delta.held
  FROM delta JOIN locked ON locked.id = delta.id
 WHERE account.id = delta.id
   AND ((account.owner_id IS NULL AND account.system <> 'escrow')
        OR (account.available + delta.available >= 0 AND account.held + delta.held >= 0))
RETURNING account.id
"""


def balances_move(deltas: dict[int, list[int]]) -> None:
    """Add ``deltas`` (account id → [available, held]) to the cached balances.

    Must run inside a transaction (a savepoint the caller rolls back on error).
    """
    ids = sorted(deltas)
    with server_bound_cursor() as cursor:
        cursor.execute(
            _MOVE_POSTGRESQL,
            [ids, [deltas[i][0] for i in ids], [deltas[i][1] for i in ids], ids],
        )
        moved = {row[0] for row in cursor.fetchall()}
    if len(moved) != len(ids):
        _refuse(deltas, [i for i in ids if i not in moved])


def _human(asset: str, amount: int) -> str:
    """Money in its currency, tokens in MTok: the unit every public surface speaks."""
    if is_currency(asset):
        return amount_display(asset, amount)
    return f"{Decimal(amount).scaleb(-6).normalize():f} MTok"


# The bucket is a word of the sentence, so each has its own translatable text.
_SHORT = {
    "available": gettext_lazy(
        "Insufficient available {asset}: you have {balance}, this needs {required}."
    ),
    "held": gettext_lazy("Insufficient held {asset}: {balance} held, {required} to release."),
}


def _refuse(deltas: dict[int, list[int]], refused: list[int]) -> None:
    account = Account.objects.get(id=refused[0])
    available, held = deltas[account.id]
    new_available, new_held = account.available + available, account.held + held
    if max(abs(new_available), abs(new_held)) > BIGINT_MAX:
        raise ValidationFailed("Amount out of range for the ledger.")
    bucket, balance, change = (
        ("available", account.available, available)
        if new_available < 0
        else ("held", account.held, held)
    )
    asset = account.asset_id
    raise InsufficientFunds(
        format_lazy(
            _SHORT[bucket],
            asset=asset,
            balance=_human(asset, balance),
            required=_human(asset, -change),
        ),
        details={
            "asset": asset,
            "bucket": bucket,
            "balance": amount_display(asset, balance),
            "required": amount_display(asset, -change),
        },
    )
