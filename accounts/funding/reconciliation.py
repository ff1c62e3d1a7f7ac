"""Reconciliation: our credited deposits and paid withdrawals against Stripe's records.

Stripe's side is its balance transactions for the period (with their sources expanded): a
``charge``/``payment`` per paid Checkout Session, a ``transfer`` (negative) per payout. Each of
ours must have one of Stripe's with the same amount and currency, and each of Stripe's in the
period must have one of ours. Stripe's records are fetched with an hour's margin on both sides
so that a charge made just before the period for a deposit credited just inside it still
matches.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction

from accounts.funding import stripe_gateway
from accounts.funding.models import (
    Deposit,
    DepositStatus,
    ReconciliationReport,
    Withdrawal,
    WithdrawalStatus,
)
from accounts.funding.stripe_gateway import BalanceTransaction
from exchange.ledger.units import amount_display

logger = logging.getLogger(__name__)

MARGIN = timedelta(hours=1)
CHARGE_TYPES = ("charge", "payment")


def _money(currency: str, amount: int) -> str:
    return f"{amount_display(currency, amount)} {currency}"


def reconcile_run(*, since: datetime, until: datetime) -> ReconciliationReport:
    """Compare the period [since, until); store and return the report (fires Stripe calls)."""
    stripe_rows = stripe_gateway.balance_transaction_list(
        created_from=int((since - MARGIN).timestamp()),
        created_until=int((until + MARGIN).timestamp()),
    )
    in_period = (since.timestamp(), until.timestamp())
    charges = [row for row in stripe_rows if row.type in CHARGE_TYPES]
    transfers = {row.source_id: row for row in stripe_rows if row.type == "transfer"}
    by_intent = {row.payment_intent: row for row in charges if row.payment_intent}
    by_deposit = {
        row.metadata["deposit_id"]: row for row in charges if "deposit_id" in row.metadata
    }
    differences: list[dict[str, str]] = []
    matched_ids: set[str] = set()
    matched = 0

    deposits = Deposit.objects.filter(
        status=DepositStatus.CREDITED, credited_at__gte=since, credited_at__lt=until
    ).order_by("id")
    for deposit in deposits:
        row = by_intent.get(deposit.stripe_payment_intent) or by_deposit.get(str(deposit.pk))
        if row is None:
            differences.append(
                {
                    "kind": "deposit_without_charge",
                    "ours": f"deposit {deposit.pk}",
                    "detail": f"credited {_money(deposit.currency, deposit.amount)}; "
                    "Stripe has no charge for it",
                }
            )
            continue
        matched_ids.add(row.id)
        if (row.amount, row.currency) != (deposit.amount, deposit.currency):
            differences.append(
                {
                    "kind": "deposit_amount_differs",
                    "ours": f"deposit {deposit.pk}",
                    "stripe": row.id,
                    "detail": f"credited {_money(deposit.currency, deposit.amount)}, Stripe "
                    f"charged {_money(row.currency, row.amount)}",
                }
            )
        else:
            matched += 1
    for row in charges:
        if row.id in matched_ids or not in_period[0] <= row.created < in_period[1]:
            continue
        if _deposit_credited_elsewhere(row):
            continue
        differences.append(
            {
                "kind": "charge_not_credited",
                "stripe": row.id,
                "detail": f"Stripe charged {_money(row.currency, row.amount)} "
                f"({row.source_id}); no credited deposit",
            }
        )

    withdrawals = Withdrawal.objects.filter(
        status=WithdrawalStatus.PAID, finished_at__gte=since, finished_at__lt=until
    ).order_by("id")
    paid_transfer_ids = set()
    for withdrawal in withdrawals:
        row = transfers.get(withdrawal.stripe_transfer_id or "")
        paid_transfer_ids.add(withdrawal.stripe_transfer_id)
        if row is None:
            differences.append(
                {
                    "kind": "withdrawal_without_transfer",
                    "ours": f"withdrawal {withdrawal.pk}",
                    "detail": f"paid {_money(withdrawal.currency, withdrawal.amount)}; "
                    "Stripe has no transfer for it",
                }
            )
        elif (-row.amount, row.currency) != (withdrawal.amount, withdrawal.currency):
            differences.append(
                {
                    "kind": "withdrawal_amount_differs",
                    "ours": f"withdrawal {withdrawal.pk}",
                    "stripe": row.id,
                    "detail": f"paid {_money(withdrawal.currency, withdrawal.amount)}, Stripe "
                    f"transferred {_money(row.currency, -row.amount)}",
                }
            )
        else:
            matched += 1
    for transfer_id, row in transfers.items():
        if transfer_id in paid_transfer_ids or not in_period[0] <= row.created < in_period[1]:
            continue
        if Withdrawal.objects.filter(
            stripe_transfer_id=transfer_id, status=WithdrawalStatus.PAID
        ).exists():
            continue
        differences.append(
            {
                "kind": "transfer_not_recorded",
                "stripe": row.id,
                "detail": f"Stripe transferred {_money(row.currency, -row.amount)} "
                f"({transfer_id}); no paid withdrawal",
            }
        )

    with transaction.atomic(durable=True):
        report = ReconciliationReport.objects.create(
            since=since, until=until, matched=matched, differences=differences
        )
    if differences:
        logger.error(
            "Stripe reconciliation %s – %s: %d difference(s): %s",
            since.isoformat(),
            until.isoformat(),
            len(differences),
            "; ".join(item["detail"] for item in differences[:20]),
        )
    else:
        logger.info("Stripe reconciliation %s – %s: %d matched", since, until, matched)
    return report


def _deposit_credited_elsewhere(row: BalanceTransaction) -> bool:
    """A charge of the period whose deposit was credited outside it (e.g. a late webhook)."""
    deposits = Deposit.objects.filter(status=DepositStatus.CREDITED)
    if row.payment_intent and deposits.filter(stripe_payment_intent=row.payment_intent).exists():
        return True
    deposit_id = row.metadata.get("deposit_id", "")
    return deposit_id.isdigit() and deposits.filter(pk=int(deposit_id)).exists()
