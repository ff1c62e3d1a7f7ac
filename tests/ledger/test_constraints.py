"""The database wall: bad writes sent as raw SQL, past the services, are refused by PostgreSQL.

Each variant runs in its own real transaction (``transaction=True``: constraints checked at
commit fire too) and must leave every ledger row as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from exchange.ledger import services
from exchange.ledger.models import Account, LedgerTransaction, Posting
from tests.ledger.conftest import SYMBOL, fund, issue, ledger_state

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


@dataclass
class World:
    user_cny: int
    user_usd: int
    user_tokens: int
    other_cny: int
    other_usd: int
    clearing_cny: int
    clearing_usd: int
    issuance_tokens: int
    user_id: int
    other_id: int
    transaction_id: int
    posting_ids: list[int]


@pytest.fixture
def world(make_user, market) -> World:
    user, other = make_user(), make_user()
    fund(user, 1_000)
    fund(user, 1_000, currency="USD")
    fund(other, 500)
    fund(other, 500, currency="USD")
    issue(user, market, 10_000)
    held = services.hold_place(
        user=user, asset="CNY", amount=100, reference="o", idempotency_key="h"
    )

    def account(owner: Any, asset: str, system: str = "", issuer: Any = None) -> int:
        return Account.objects.get(owner=owner, system=system, asset_id=asset, issuer=issuer).pk

    return World(
        user_cny=account(user, "CNY"),
        user_usd=account(user, "USD"),
        user_tokens=account(user, SYMBOL),
        other_cny=account(other, "CNY"),
        other_usd=account(other, "USD"),
        clearing_cny=account(None, "CNY", "stripe_clearing"),
        clearing_usd=account(None, "USD", "stripe_clearing"),
        issuance_tokens=account(None, SYMBOL, "capacity_issuance", issuer=user),
        user_id=user.pk,
        other_id=other.pk,
        transaction_id=held.pk,
        posting_ids=list(Posting.objects.order_by("id").values_list("id", flat=True)),
    )


_counter = iter(range(10**9))


def new_transaction(cursor: Any) -> int:
    cursor.execute(
        "INSERT INTO ledger_transaction (kind, reference, idempotency_key, request_hash, memo, "
        "created_at) VALUES ('adjustment', 'raw', %s, '', '', %s) RETURNING id",
        [f"raw:{next(_counter)}", timezone.now()],
    )
    return cursor.fetchone()[0]


def post(cursor: Any, transaction_id: int, legs: list[tuple[int, str, str, int]]) -> None:
    """All legs in one INSERT, the way the journal writes them (balance is checked per
    statement)."""
    rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(legs))
    statement = f"INSERT INTO ledger_posting (transaction_id, account_id, asset_id, bucket, amount) VALUES {rows}"  # noqa: S608 -- placeholders only
    cursor.execute(statement, [value for leg in legs for value in (transaction_id, *leg)])


BadWrite = Callable[[Any, World], None]


def legs_variant(make_legs: Callable[[World], list[tuple[int, str, str, int]]]) -> BadWrite:
    def write(cursor: Any, world: World) -> None:
        post(cursor, new_transaction(cursor), make_legs(world))

    return write


def assert_refused(world: World, bad_write: BadWrite) -> None:
    before = ledger_state()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        bad_write(cursor, world)
    assert ledger_state() == before


# --- 1. unbalanced transactions -----------------------------------------------------------------
A, H = "available", "held"
UNBALANCED: list[BadWrite] = [
    *[legs_variant(lambda w, n=n: [(w.user_cny, "CNY", A, n)]) for n in (1, -1, 7, 10**15)],
    *[
        legs_variant(lambda w, n=n: [(w.user_cny, "CNY", A, n), (w.clearing_cny, "CNY", A, -n + 1)])
        for n in (2, 100, 10**12)
    ],
    *[
        legs_variant(lambda w, n=n: [(w.user_cny, "CNY", A, -n), (w.user_cny, "CNY", H, n + 1)])
        for n in (1, 50)
    ],
    # balanced overall but not per asset
    legs_variant(lambda w: [(w.user_cny, "CNY", A, 5), (w.user_usd, "USD", A, -5)]),
    legs_variant(lambda w: [(w.user_cny, "CNY", A, -5), (w.other_usd, "USD", A, 5)]),
    legs_variant(lambda w: [(w.user_tokens, SYMBOL, A, 3), (w.clearing_cny, "CNY", A, -3)]),
    # balanced in one asset, not in the other
    legs_variant(
        lambda w: [
            (w.user_cny, "CNY", A, 5),
            (w.clearing_cny, "CNY", A, -5),
            (w.user_usd, "USD", A, 1),
        ]
    ),
    legs_variant(
        lambda w: [
            (w.user_tokens, SYMBOL, A, -2),
            (w.issuance_tokens, SYMBOL, A, 1),
            (w.other_cny, "CNY", A, 1),
            (w.clearing_cny, "CNY", A, -1),
        ]
    ),
    # many legs, off by one
    legs_variant(lambda w: [(w.other_cny, "CNY", A, 1)] * 10 + [(w.clearing_cny, "CNY", A, -9)]),
    legs_variant(lambda w: [(w.clearing_usd, "USD", A, -1)] * 3 + [(w.other_usd, "USD", A, 2)]),
    # a one-sided leg added to an existing, committed transaction
    *[
        (lambda c, w, n=n, b=b: post(c, w.transaction_id, [(w.user_cny, "CNY", b, n)]))
        for n, b in ((1, A), (-1, A), (1, H), (-100, H))
    ],
    # a "balanced" pair added to an existing transaction in another asset only on one side
    lambda c, w: post(c, w.transaction_id, [(w.user_usd, "USD", A, 1), (w.user_cny, "CNY", A, -1)]),
    # several transactions, one of them unbalanced
    lambda c, w: (
        post(c, new_transaction(c), [(w.user_cny, "CNY", A, 1), (w.clearing_cny, "CNY", A, -1)]),
        post(c, new_transaction(c), [(w.user_cny, "CNY", A, 1), (w.clearing_cny, "CNY", A, -2)]),
    ),
    lambda c, w: post(
        c,
        new_transaction(c),
        [(w.user_cny, "CNY", A, 2**62), (w.clearing_cny, "CNY", A, -(2**62) + 1)],
    ),
]


@pytest.mark.parametrize("bad_write", UNBALANCED)
def test_unbalanced_transaction_is_refused(world: World, bad_write: BadWrite) -> None:
    assert_refused(world, bad_write)


def test_the_unbalanced_class_has_at_least_twenty_variants() -> None:
    assert min(len(UNBALANCED), len(ZERO), len(MIXED), len(MUTATE), len(NEGATIVE)) >= 20


# --- 2. zero amounts (the sign convention: signed, never zero) ----------------------------------
ZERO: list[BadWrite] = [
    *[
        legs_variant(lambda w, a=account, s=asset, b=bucket: [(getattr(w, a), s, b, 0)])
        for account, asset in (
            ("user_cny", "CNY"),
            ("user_usd", "USD"),
            ("user_tokens", SYMBOL),
            ("other_cny", "CNY"),
            ("other_usd", "USD"),
        )
        for bucket in (A, H)
    ],
    *[
        legs_variant(
            lambda w, a=account, n=n: [
                (w.user_cny, "CNY", A, n),
                (w.clearing_cny, "CNY", A, -n),
                (getattr(w, a), "CNY", A, 0),
            ]
        )
        for account in ("user_cny", "other_cny", "clearing_cny")
        for n in (1, 10**9)
    ],
    *[
        (
            lambda c, w, b=bucket, a=account: post(
                c, w.transaction_id, [(getattr(w, a), "CNY", b, 0)]
            )
        )
        for account in ("user_cny", "other_cny")
        for bucket in (A, H)
    ],
]


@pytest.mark.parametrize("bad_write", ZERO)
def test_zero_amount_posting_is_refused(world: World, bad_write: BadWrite) -> None:
    assert_refused(world, bad_write)


# --- 3. legs in mixed assets: a posting's asset must be its account's ---------------------------
MIXED: list[BadWrite] = [
    legs_variant(
        lambda w, account=account, claimed=claimed, n=n: [
            (getattr(w, account), claimed, A, n),
            (w.clearing_usd if claimed == "USD" else w.clearing_cny, claimed, A, -n),
        ]
    )
    for account, claimed in (
        ("user_cny", "USD"),
        ("other_cny", "USD"),
        ("user_usd", "CNY"),
        ("other_usd", "CNY"),
        ("user_tokens", "CNY"),
        ("user_tokens", "USD"),
    )
    for n in (1, -1, 10**10)
] + [
    legs_variant(lambda w: [(w.user_cny, SYMBOL, A, 5), (w.issuance_tokens, SYMBOL, A, -5)]),
    legs_variant(lambda w: [(w.clearing_cny, "USD", A, 5), (w.other_usd, "USD", A, -5)]),
    legs_variant(lambda w: [(w.user_cny, "NOPE", A, 5), (w.other_cny, "NOPE", A, -5)]),
]


@pytest.mark.parametrize("bad_write", MIXED)
def test_leg_in_another_asset_than_its_account_is_refused(
    world: World, bad_write: BadWrite
) -> None:
    assert_refused(world, bad_write)


# --- 4. UPDATE or DELETE of posted rows ---------------------------------------------------------
def sql(statement: str, *params: Callable[[World], Any]) -> BadWrite:
    def write(cursor: Any, world: World) -> None:
        cursor.execute(statement, [param(world) for param in params])

    return write


def first_posting(w: World) -> int:
    return w.posting_ids[0]


def last_posting(w: World) -> int:
    return w.posting_ids[-1]


MUTATE: list[BadWrite] = [
    sql("UPDATE ledger_posting SET amount = amount + 1 WHERE id = %s", first_posting),
    sql("UPDATE ledger_posting SET amount = amount WHERE id = %s", first_posting),
    sql("UPDATE ledger_posting SET amount = -amount WHERE id = %s", last_posting),
    sql("UPDATE ledger_posting SET bucket = 'held' WHERE id = %s", first_posting),
    sql(
        "UPDATE ledger_posting SET account_id = %s WHERE id = %s",
        lambda w: w.other_cny,
        last_posting,
    ),
    sql("UPDATE ledger_posting SET transaction_id = %s", lambda w: w.transaction_id),
    sql("UPDATE ledger_posting SET amount = amount * 2"),
    sql("UPDATE ledger_posting SET asset_id = 'USD' WHERE asset_id = 'CNY'"),
    sql("DELETE FROM ledger_posting WHERE id = %s", first_posting),
    sql("DELETE FROM ledger_posting WHERE id = %s", last_posting),
    sql("DELETE FROM ledger_posting WHERE transaction_id = %s", lambda w: w.transaction_id),
    sql("DELETE FROM ledger_posting"),
    sql("UPDATE ledger_transaction SET kind = 'deposit' WHERE id = %s", lambda w: w.transaction_id),
    sql("UPDATE ledger_transaction SET reference = 'x' WHERE id = %s", lambda w: w.transaction_id),
    sql(
        "UPDATE ledger_transaction SET idempotency_key = 'y' WHERE id = %s",
        lambda w: w.transaction_id,
    ),
    sql("UPDATE ledger_transaction SET created_at = now() - interval '1 year'"),
    sql("UPDATE ledger_transaction SET memo = 'edited'"),
    sql("UPDATE ledger_transaction SET request_hash = ''"),
    sql("DELETE FROM ledger_transaction WHERE id = %s", lambda w: w.transaction_id),
    sql("DELETE FROM ledger_transaction"),
    # a correcting pair inserted and then "tidied away"
    lambda c, w: (
        post(
            c,
            tid := new_transaction(c),
            [(w.user_cny, "CNY", A, 1), (w.clearing_cny, "CNY", A, -1)],
        ),
        c.execute("DELETE FROM ledger_posting WHERE transaction_id = %s", [tid]),
    ),
    sql(
        "WITH gone AS (DELETE FROM ledger_posting WHERE id = %s RETURNING *) SELECT 1",
        first_posting,
    ),
]


@pytest.mark.parametrize("bad_write", MUTATE)
def test_posted_rows_cannot_be_updated_or_deleted(world: World, bad_write: BadWrite) -> None:
    assert_refused(world, bad_write)


# --- 5. a user balance below zero ---------------------------------------------------------------
def set_balance(account: str, column: str, value: int) -> BadWrite:
    return sql(
        f"UPDATE ledger_account SET {column} = %s WHERE id = %s",  # noqa: S608 -- test constants
        lambda w: value,
        lambda w: getattr(w, account),
    )


NEGATIVE: list[BadWrite] = [
    *[
        set_balance(account, column, value)
        for account in ("user_cny", "user_usd", "user_tokens", "other_cny")
        for column in ("available", "held")
        for value in (-1, -(2**62))
    ],
    sql(
        "UPDATE ledger_account SET available = available - 1001 WHERE id = %s", lambda w: w.user_cny
    ),
    sql("UPDATE ledger_account SET held = held - 101 WHERE id = %s", lambda w: w.user_cny),
    sql("UPDATE ledger_account SET available = -available - 1 WHERE owner_id IS NOT NULL"),
    sql("UPDATE ledger_account SET held = -1 WHERE owner_id = %s", lambda w: w.other_id),
    sql(
        "INSERT INTO ledger_account (owner_id, system, asset_id, available, held) "
        "SELECT id, '', 'CNY', -1, 0 FROM accounts_user WHERE id NOT IN (%s, %s) LIMIT 1",
        lambda w: w.user_id,
        lambda w: w.other_id,
    ),
    # a system account turned into a user's to carry its negative balance
    sql(
        "UPDATE ledger_account SET owner_id = %s, system = '' WHERE id = %s",
        lambda w: w.user_id,
        lambda w: w.clearing_usd,
    ),
    # a system account may not hold anything on hold
    sql("UPDATE ledger_account SET held = 5 WHERE id = %s", lambda w: w.clearing_cny),
    # nor be both a user's and a system account
    sql("UPDATE ledger_account SET system = 'fee_revenue' WHERE id = %s", lambda w: w.user_cny),
]


@pytest.fixture
def world_with_third_user(world: World, make_user) -> World:
    make_user()
    return world


@pytest.mark.parametrize("bad_write", NEGATIVE)
def test_user_balance_below_zero_is_refused(
    world_with_third_user: World, bad_write: BadWrite
) -> None:
    assert_refused(world_with_third_user, bad_write)


def test_a_balanced_raw_transaction_is_accepted(world: World) -> None:
    """The wall refuses what is wrong, not everything: a balanced pair goes through."""
    with transaction.atomic(), connection.cursor() as cursor:
        post(
            cursor,
            new_transaction(cursor),
            [(world.user_cny, "CNY", A, 5), (world.clearing_cny, "CNY", A, -5)],
        )
    assert LedgerTransaction.objects.filter(reference="raw").count() == 1


def test_legs_of_one_transaction_sent_in_separate_statements_are_refused(world: World) -> None:
    """Balance is checked per INSERT statement: a pair that would balance only after a second
    statement is refused at the first (the journal always writes a transaction's legs at once)."""

    def one_leg_per_statement(cursor: Any, w: World) -> None:
        transaction_id = new_transaction(cursor)
        post(cursor, transaction_id, [(w.user_cny, "CNY", A, 5)])
        post(cursor, transaction_id, [(w.clearing_cny, "CNY", A, -5)])

    assert_refused(world, one_leg_per_statement)


# --- 6. references: what the foreign keys checked, now set-based per statement ----------------
REFERENCES: list[BadWrite] = [
    # balanced legs of a transaction that does not exist
    lambda c, w: post(c, 10**12, [(w.user_cny, "CNY", A, 5), (w.clearing_cny, "CNY", A, -5)]),
    # balanced legs on an account that does not exist
    legs_variant(lambda w: [(10**12, "CNY", A, 5), (w.clearing_cny, "CNY", A, -5)]),
    # an account with postings deleted, moved to another id, or to another asset
    sql("DELETE FROM ledger_account WHERE id = %s", lambda w: w.user_cny),
    sql("UPDATE ledger_account SET id = 10000000 WHERE id = %s", lambda w: w.user_cny),
    sql(
        "UPDATE ledger_account SET asset_id = %s WHERE id = %s",
        lambda w: SYMBOL,
        lambda w: w.other_cny,
    ),
]


@pytest.mark.parametrize("bad_write", REFERENCES)
def test_postings_refer_to_existing_transactions_and_accounts(
    world: World, bad_write: BadWrite
) -> None:
    assert_refused(world, bad_write)
