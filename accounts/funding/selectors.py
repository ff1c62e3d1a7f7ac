"""Funding reads: a user's deposits, withdrawals and connected account."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.funding.models import ConnectedAccount, Deposit, Withdrawal


def deposit_list(*, user: Any) -> QuerySet[Deposit]:
    return Deposit.objects.filter(user=user).select_related("credit_transaction").order_by("-id")


def withdrawal_list(*, user: Any) -> QuerySet[Withdrawal]:
    return (
        Withdrawal.objects.filter(user=user)
        .select_related("hold_transaction", "final_transaction")
        .order_by("-id")
    )


def connected_account_get(*, user: Any) -> ConnectedAccount | None:
    return ConnectedAccount.objects.filter(user=user).first()
