"""The one place that writes ledger rows: resolve accounts, record transactions, move balances.

``journal_post`` takes already-validated entries (each a balanced list of legs) and, in one
savepoint: inserts the transactions (``ON CONFLICT (idempotency_key) DO NOTHING``, so a replay
finds the first one and a concurrent duplicate waits for it), moves every touched balance with
one conditional ``UPDATE`` (see ``exchange.ledger.locking``), then bulk-inserts the postings.
On PostgreSQL each step is one statement whatever the number of entries (``unnest`` arrays).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.db import DataError, connection, transaction
from django.utils import timezone

from exchange.db import array_param, server_bound_cursor
from exchange.errors import IdempotencyConflict, ValidationFailed
from exchange.ledger.locking import balances_move
from exchange.ledger.models import (
    Account,
    Asset,
    AssetKind,
    Bucket,
    LedgerTransaction,
    SystemAccount,
)
from exchange.markets.currencies import CURRENCY_DECIMALS
from exchange.markets.models import Market


class AccountKey(NamedTuple):
    """An account: a user's (``owner``) or a system account (``system``; a capacity issuance
    account also names its ``issuer``, the provider). Exactly one of owner and system is set."""

    owner: int | None
    system: str
    asset: str
    issuer: int | None = None


class Leg(NamedTuple):
    account: AccountKey
    bucket: str
    amount: int


@dataclass(slots=True)
class Entry:
    kind: str
    reference: str
    idempotency_key: str
    legs: list[Leg]
    memo: str = ""
    staff_user_id: int | None = None
    request_hash: str = field(init=False, default="")

    def __post_init__(self) -> None:
        # The body a replay must match: everything the entry would write but its time.
        parts = [self.kind, self.reference, self.memo, str(self.staff_user_id)]
        totals: dict[str, int] = {}
        for (owner, system, asset, issuer), bucket, amount in self.legs:
            if amount == 0 or bucket not in _BUCKETS or (owner is None and bucket != _AVAILABLE):
                raise ValueError(f"invalid leg {(owner, system, asset, bucket, amount)!r}")
            totals[asset] = totals.get(asset, 0) + amount
            # (an issuer only where there is one: the hashes of earlier entries stay the same)
            holder = system if issuer is None else f"{system}:{issuer}"
            parts.append(f"{owner}/{holder}/{asset}/{bucket}/{amount}")
        if len(self.legs) < 2 or any(totals.values()):
            raise ValueError(f"unbalanced entry {self.idempotency_key!r}: {totals}")
        parts[4:] = sorted(parts[4:])
        self.request_hash = hashlib.sha256("\n".join(parts).encode()).hexdigest()


_AVAILABLE = Bucket.AVAILABLE.value
_BUCKETS = frozenset((Bucket.AVAILABLE.value, Bucket.HELD.value))


def user_account(user_id: int, asset: str) -> AccountKey:
    return AccountKey(user_id, "", asset)


def system_account(system: str, asset: str) -> AccountKey:
    return AccountKey(None, system, asset)


def issuance_account(provider_id: int, asset: str) -> AccountKey:
    """The capacity issuance account of one provider in one token asset."""
    return AccountKey(None, SystemAccount.CAPACITY_ISSUANCE.value, asset, provider_id)


def assets_ensure(codes: Iterable[str]) -> None:
    """Create the currency or market token assets named by ``codes`` that do not exist yet."""
    wanted = set(codes)
    missing = wanted - set(Asset.objects.filter(code__in=wanted).values_list("code", flat=True))
    if not missing:
        return
    markets = {m.symbol: m for m in Market.objects.filter(symbol__in=missing)}
    rows = []
    for code in sorted(missing):
        if code in CURRENCY_DECIMALS:
            rows.append(Asset(code=code, kind=AssetKind.CURRENCY, decimals=CURRENCY_DECIMALS[code]))
        elif code in markets:
            rows.append(Asset(code=code, kind=AssetKind.TOKEN, decimals=0, market=markets[code]))
        else:
            raise ValidationFailed(f"Unknown asset {code!r}.", details={"asset": code})
    Asset.objects.bulk_create(rows, ignore_conflicts=True)


def accounts_resolve(keys: Iterable[AccountKey]) -> dict[AccountKey, int]:
    """Account ids for ``keys``, creating missing accounts (and their assets) on the way."""
    wanted = set(keys)
    found = _accounts_find(wanted)
    missing = wanted - found.keys()
    if missing:
        assets_ensure(key[2] for key in missing)
        Account.objects.bulk_create(
            [
                Account(owner_id=owner, system=system, asset_id=asset, issuer_id=issuer)
                for owner, system, asset, issuer in missing
            ],
            ignore_conflicts=True,
        )
        found.update(_accounts_find(missing))
    return found


def _accounts_find(keys: set[AccountKey]) -> dict[AccountKey, int]:
    owners = {key.owner for key in keys if key.owner is not None}
    systems = {key.system for key in keys if key.owner is None}
    assets = {key.asset for key in keys}
    issuers = {key.issuer for key in keys if key.issuer is not None}
    rows: Iterable[tuple[int, int | None, str, str, int | None]]
    # array parameters, not a query built through the ORM for every post (that was a sixth
    # of an order batch's CPU at intake)
    by_owner, owner_ids = array_param(sorted(owners), "bigint")
    by_system, system_names = array_param(sorted(systems), "varchar")
    by_asset, asset_codes = array_param(sorted(assets), "varchar")
    by_issuer, issuer_ids = array_param(sorted(issuers), "bigint")
    with server_bound_cursor() as cursor:
        cursor.execute(
            "SELECT id, owner_id, system, asset_id, issuer_id FROM ledger_account "  # noqa: S608  # nosec B608
            f"WHERE (owner_id = ANY({by_owner}) "
            f"OR (owner_id IS NULL AND system = ANY({by_system}))) "
            f"AND asset_id = ANY({by_asset}) "
            f"AND (issuer_id IS NULL OR issuer_id = ANY({by_issuer}))",
            [owner_ids, system_names, asset_codes, issuer_ids],
        )
        rows = cursor.fetchall()
    return {
        key: account_id
        for account_id, owner, system, asset, issuer in rows
        if (key := AccountKey(owner, system, asset, issuer)) in keys
    }


def journal_post(entries: Sequence[Entry]) -> list[LedgerTransaction]:
    """Record ``entries``; returns one transaction per entry (the first one for a replay).

    Runs in a savepoint of the caller's transaction (or its own transaction): the outermost
    ``atomic`` owns durability. Raises ``InsufficientFunds`` or ``IdempotencyConflict`` with
    nothing written.
    """
    created, replayed, now = _post_atomic(entries)
    result = []
    for entry in entries:
        existing = replayed.get(entry.idempotency_key)
        if existing is not None:
            result.append(existing)
            continue
        result.append(
            LedgerTransaction(
                id=created[entry.idempotency_key],
                kind=entry.kind,
                reference=entry.reference,
                idempotency_key=entry.idempotency_key,
                request_hash=entry.request_hash,
                memo=entry.memo,
                staff_user_id=entry.staff_user_id,
                created_at=now,
            )
        )
    return result


def journal_post_ids(entries: Sequence[Entry]) -> list[int]:
    """``journal_post`` for the hot path: returns only the transaction ids (no model objects).

    Same guarantees; must run inside the caller's transaction.
    """
    created, replayed, _ = _post_atomic(entries)
    return [
        replayed[e.idempotency_key].id
        if e.idempotency_key in replayed
        else created[e.idempotency_key]
        for e in entries
    ]


def _post_atomic(
    entries: Sequence[Entry],
) -> tuple[dict[str, int], dict[str, LedgerTransaction], datetime]:
    try:
        with transaction.atomic():
            return _post_rows(entries)
    except DataError as error:
        # A balance would leave the range of bigint (PostgreSQL raises on overflow).
        raise ValidationFailed("Amount out of range for the ledger.") from error


def _post_rows(
    entries: Sequence[Entry],
) -> tuple[dict[str, int], dict[str, LedgerTransaction], datetime]:
    now = timezone.now()
    accounts = accounts_resolve(leg.account for entry in entries for leg in entry.legs)
    created, replayed = _transactions_insert(entries, now)
    created_unposted = dict(created)

    deltas: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    user_accounts: set[int] = set()
    posting_rows: list[tuple[int, int, str, str, int]] = []
    for entry in entries:
        # pop: an entry repeated inside the batch is a replay of its first occurrence.
        transaction_id = created_unposted.pop(entry.idempotency_key, None)
        if transaction_id is None:
            continue
        for leg in entry.legs:
            account_id = accounts[leg.account]
            if leg.account[0] is not None:
                user_accounts.add(account_id)
            deltas[account_id][leg.bucket == Bucket.HELD] += leg.amount
            posting_rows.append(
                (transaction_id, account_id, leg.account[2], leg.bucket, leg.amount)
            )
    if deltas:
        balances_move(deltas)
        _postings_insert(posting_rows)
    return created, replayed, now


def _transactions_insert(
    entries: Sequence[Entry], now: datetime
) -> tuple[dict[str, int], dict[str, LedgerTransaction]]:
    """Insert new transactions. Returns (key → new id, key → earlier transaction of a replay)."""
    unique: dict[str, Entry] = {}
    for entry in entries:
        first = unique.setdefault(entry.idempotency_key, entry)
        if first.request_hash != entry.request_hash:
            raise IdempotencyConflict(entry.idempotency_key)
    batch = list(unique.values())
    created = _transactions_insert_postgresql(batch, now)

    replayed: dict[str, LedgerTransaction] = {}
    replay_keys = [key for key in unique if key not in created]
    if replay_keys:
        for earlier in LedgerTransaction.objects.filter(idempotency_key__in=replay_keys):
            if earlier.request_hash != unique[earlier.idempotency_key].request_hash:
                raise IdempotencyConflict(earlier.idempotency_key)
            replayed[earlier.idempotency_key] = earlier
    # Entries repeated inside this batch are replays of their first occurrence.
    return created, replayed


_TRANSACTION_COLUMNS = "kind, reference, idempotency_key, request_hash, memo, staff_user_id"


def _transactions_insert_postgresql(batch: list[Entry], now: datetime) -> dict[str, int]:
    params = [
        array_param([entry.kind for entry in batch], "text"),
        array_param([entry.reference for entry in batch], "text"),
        array_param([entry.idempotency_key for entry in batch], "text"),
        array_param([entry.request_hash for entry in batch], "text"),
        array_param([entry.memo for entry in batch], "text"),
        array_param([entry.staff_user_id for entry in batch], "bigint"),
    ]
    arrays = ", ".join(placeholder for placeholder, _ in params)
    with server_bound_cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO ledger_transaction ({_TRANSACTION_COLUMNS}, created_at)
            SELECT *, %s FROM unnest({arrays})
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING idempotency_key, id
            """,  # noqa: S608 -- constant column list, values are parameters  # nosec B608
            [now, *(value for _, value in params)],
        )
        return dict(cursor.fetchall())


def _postings_insert(rows: list[tuple[int, int, str, str, int]]) -> None:
    # COPY: the fastest way in, and the triggers and constraints still apply to every row.
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            "COPY ledger_posting (transaction_id, account_id, asset_id, bucket, amount) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)
