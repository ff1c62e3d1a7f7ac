"""Migration ledger 0007: each provider's net issuance moves off the one shared issuance account
of before to its own (#16 finding 3); what cannot be attributed stays; idempotent; audit holds."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.db import connection

from exchange.ledger.journal import Entry, Leg, journal_post, system_account, user_account
from exchange.ledger.models import Account, LedgerTransaction, TransactionKind
from exchange.ledger.selectors import audit_run
from tests.ledger.conftest import SYMBOL

pytestmark = pytest.mark.django_db

split = importlib.import_module("exchange.ledger.migrations.0007_issuance_per_provider")


def shared_post(kind: str, user_id: int, tokens: int, key: str) -> None:
    """A posting of before: the shared account (no issuer) against the user's tokens."""
    shared = system_account("capacity_issuance", SYMBOL)
    mine = user_account(user_id, SYMBOL)
    legs = [Leg(shared, "available", -tokens), Leg(mine, "available", tokens)]
    journal_post([Entry(kind=kind, reference="before", idempotency_key=key, legs=legs)])


def issuance(issuer) -> int:
    return Account.objects.get(system="capacity_issuance", issuer=issuer, asset_id=SYMBOL).available


def test_each_providers_net_issuance_moves_to_its_own_account(make_user, market) -> None:
    alpha, beta, holder = make_user(), make_user(), make_user()
    shared_post(TransactionKind.CAPACITY_ISSUE, alpha.pk, 1_000, "a1")
    shared_post(TransactionKind.CAPACITY_ISSUE, beta.pk, 300, "b1")
    shared_post(TransactionKind.CAPACITY_RETIRE, alpha.pk, -200, "a2")
    sold = [  # alpha sells 50 to the holder, whose lot expires: retired into the shared account
        Leg(user_account(alpha.pk, SYMBOL), "available", -50),
        Leg(user_account(holder.pk, SYMBOL), "available", 50),
    ]
    journal_post([Entry(kind="trade", reference="before", idempotency_key="t1", legs=sold)])
    shared_post(TransactionKind.LOT_EXPIRE, holder.pk, -50, "h1")  # not attributable
    assert issuance(None) == -1_050

    split.split_issuance(django_apps, SimpleNamespace(connection=connection))
    split.split_issuance(django_apps, SimpleNamespace(connection=connection))  # idempotent

    assert issuance(alpha) == -800
    assert issuance(beta) == -300
    assert issuance(None) == 50  # the lot expiry retired into it before
    moved = LedgerTransaction.objects.get(kind="issuance_split")
    assert moved.idempotency_key == f"migration:ledger:0007:{SYMBOL}"
    assert sorted(moved.postings.values_list("amount", flat=True)) == [-800, -300, 1_100]
    report = audit_run()
    assert report.is_ok, report.render()
