"""Escrow never negative is enforced by the database, as the issue asks, not only found
afterwards by ledger_audit (review finding 11)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from exchange.errors import InsufficientFunds
from exchange.ledger import services as ledger
from exchange.ledger.models import Account, Asset, SystemAccount
from tests.delivery.escrow.conftest import balance, escrow_balance

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_escrow_account_cannot_go_negative(make_user):
    provider = make_user(role="provider")
    assert escrow_balance() == 0

    # when: a release pays out escrow that no buyer ever paid in (a caller's bug)
    with pytest.raises(InsufficientFunds), transaction.atomic():
        ledger.escrow_release_many(
            releases=[
                ledger.EscrowRelease(
                    provider=provider, currency="CNY", gross=10**8, fee=0,
                    reference="review", idempotency_key="review:escrow-negative",
                )
            ]
        )  # fmt: skip

    # then: refused; escrow is not -1 CNY with the provider paid 1 CNY
    assert escrow_balance() == 0, f"{SystemAccount.ESCROW} CNY is {escrow_balance()}"
    assert balance(provider, "CNY") == (0, 0)


def _system_account(system: str) -> Account:
    Asset.objects.get_or_create(code="CNY", defaults={"kind": "currency", "decimals": 8})
    return Account.objects.create(system=system, asset_id="CNY")


def test_the_database_refuses_a_negative_escrow_balance_written_directly():
    # given: the escrow account of CNY
    account = _system_account(SystemAccount.ESCROW)

    # when / then: even a write that bypasses the ledger's services is refused by the CHECK
    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(id=account.id).update(available=-1)
    account.refresh_from_db()
    assert account.available == 0


def test_other_system_accounts_may_still_go_negative():
    # they mirror the outside world (Stripe clearing is negative by what users deposited)
    account = _system_account(SystemAccount.STRIPE_CLEARING)
    Account.objects.filter(id=account.id).update(available=-5)
    account.refresh_from_db()
    assert account.available == -5
