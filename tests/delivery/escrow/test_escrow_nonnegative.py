"""Review proof (helper 11): "escrow never negative" must be enforced by the database, as the
issue asks, not only found afterwards by ledger_audit."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from exchange.errors import ExchangeError
from exchange.ledger import services as ledger
from exchange.ledger.models import SystemAccount
from tests.delivery.escrow.conftest import escrow_balance

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="review finding: ESCROW is a system account, exempt from the non-negative check",
)
def test_the_escrow_account_cannot_go_negative(make_user):
    provider = make_user(role="provider")
    assert escrow_balance() == 0

    # when: a release pays out escrow that no buyer ever paid in (a caller's bug)
    try:
        with transaction.atomic():
            ledger.escrow_release_many(
                releases=[
                    ledger.EscrowRelease(
                        provider=provider, currency="CNY", gross=10**8, fee=0,
                        reference="review", idempotency_key="review:escrow-negative",
                    )
                ]
            )  # fmt: skip
    except (ExchangeError, IntegrityError):  # the database's refusal
        pass

    # then: the database refused it; escrow is not -1 CNY with the provider paid 1 CNY
    assert escrow_balance() >= 0, f"{SystemAccount.ESCROW} CNY is {escrow_balance()}"
