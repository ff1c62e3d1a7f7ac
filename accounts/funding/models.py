"""Funding rows: Stripe deposits, received webhook events, connected accounts, withdrawals.

Amounts are ``BigIntegerField`` ledger units (1e-8 of the currency), like the ledger's. The
unique constraints are the backstop of exactly-once: one row per Stripe event id, one per
Checkout Session, one transfer per withdrawal. Rows are written only by
``accounts.funding.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import pgettext_lazy


class DepositStatus(models.TextChoices):
    # contexts: "Credited" is also an escrow refund's word, translated differently
    PENDING = "pending", pgettext_lazy("deposit status", "Pending")
    CREDITED = "credited", pgettext_lazy("deposit status", "Credited")
    FAILED = "failed", pgettext_lazy("deposit status", "Failed")


class Deposit(models.Model):
    """One request to add money through a Stripe Checkout Session."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deposits"
    )
    # A client's own key for the request: a retried POST returns the first row (NULL: none).
    client_request_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(help_text="Ledger units (1e-8 of the currency).")
    status = models.CharField(
        max_length=8, choices=DepositStatus.choices, default=DepositStatus.PENDING
    )
    stripe_session_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    checkout_url = models.URLField(max_length=2000, blank=True)
    stripe_payment_intent = models.CharField(max_length=255, blank=True, db_index=True)
    credit_transaction = models.OneToOneField(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # Refunds and disputes (see README "Funding"): what Stripe says was taken back, and what
    # the ledger has taken back so far; a shortfall is what the user had already spent.
    refunded_amount = models.BigIntegerField(default=0)
    disputed_amount = models.BigIntegerField(default=0)
    reversed_amount = models.BigIntegerField(default=0)
    reversal_count = models.PositiveIntegerField(default=0)
    dispute_status = models.CharField(
        max_length=8, blank=True, help_text="'', open, won or lost (closed wins over created)."
    )
    failure_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    credited_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="funding_deposit_amount_pos"),
            models.UniqueConstraint(
                fields=["user", "client_request_id"],
                condition=Q(client_request_id__isnull=False),
                name="funding_deposit_unique_client_request",
            ),
            models.CheckConstraint(
                condition=Q(reversed_amount__gte=0) & Q(reversed_amount__lte=models.F("amount")),
                name="funding_deposit_reversed_within_amount",
            ),
            models.CheckConstraint(
                condition=~Q(status="credited") | Q(credit_transaction__isnull=False),
                name="funding_deposit_credited_has_transaction",
            ),
        ]

    def __str__(self) -> str:
        return f"deposit #{self.pk} {self.currency} {self.status}"

    @property
    def reversal_due(self) -> int:
        """What the ledger should have taken back by now (capped at the deposit)."""
        return min(self.amount, self.refunded_amount + self.disputed_amount)

    @property
    def reversal_shortfall(self) -> int:
        if self.status != DepositStatus.CREDITED:
            return 0
        return self.reversal_due - self.reversed_amount


class StripeEventStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PROCESSED = "processed", "Processed"
    FAILED = "failed", "Failed"


class StripeEvent(models.Model):
    """A verified webhook event, stored as received and processed later by id (a task)."""

    stripe_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    # The PaymentIntent an event is about, so that an event that arrived before its deposit
    # was known can be processed again once it is.
    payment_intent = models.CharField(max_length=255, blank=True, db_index=True)
    status = models.CharField(
        max_length=9, choices=StripeEventStatus.choices, default=StripeEventStatus.RECEIVED
    )
    note = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "id"], name="funding_event_status")]

    def __str__(self) -> str:
        return f"{self.stripe_id} {self.type} {self.status}"


class ConnectedAccount(models.Model):
    """A provider's Stripe Connect (Express) account, where withdrawals are transferred."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="stripe_account"
    )
    stripe_account_id = models.CharField(max_length=255, unique=True)
    details_submitted = models.BooleanField(default=False)
    payouts_enabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user} {self.stripe_account_id}"


class WithdrawalStatus(models.TextChoices):
    PROCESSING = "processing", pgettext_lazy("withdrawal status", "Processing")
    PAID = "paid", pgettext_lazy("withdrawal status", "Paid")
    RELEASED = "released", pgettext_lazy("withdrawal status", "Failed (funds released)")


class Withdrawal(models.Model):
    """A provider's request to move available currency to their connected Stripe account."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="withdrawals"
    )
    connected_account = models.ForeignKey(
        ConnectedAccount, on_delete=models.PROTECT, related_name="withdrawals"
    )
    # A client's own key for the request: a retried POST returns the first row (NULL: none).
    client_request_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(help_text="Ledger units (1e-8 of the currency).")
    status = models.CharField(
        max_length=10, choices=WithdrawalStatus.choices, default=WithdrawalStatus.PROCESSING
    )
    stripe_transfer_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    failure_reason = models.CharField(max_length=255, blank=True)
    hold_transaction = models.OneToOneField(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    final_transaction = models.OneToOneField(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="funding_withdrawal_amount_pos"),
            models.UniqueConstraint(
                fields=["user", "client_request_id"],
                condition=Q(client_request_id__isnull=False),
                name="funding_withdrawal_unique_client_request",
            ),
            models.CheckConstraint(
                condition=Q(status="processing") | Q(final_transaction__isnull=False),
                name="funding_withdrawal_finished_has_transaction",
            ),
        ]

    def __str__(self) -> str:
        return f"withdrawal #{self.pk} {self.currency} {self.status}"

    @property
    def transfer_idempotency_key(self) -> str:
        """The one Idempotency-Key of this withdrawal's transfer: every retry sends it."""
        return f"withdrawal-{self.pk}-transfer"


class ReconciliationReport(models.Model):
    """The outcome of comparing our deposits and withdrawals with Stripe's balance transactions."""

    since = models.DateTimeField()
    until = models.DateTimeField()
    matched = models.PositiveIntegerField(default=0)
    differences = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"reconciliation {self.since:%Y-%m-%d} – {self.until:%Y-%m-%d}"

    @property
    def is_ok(self) -> bool:
        return not self.differences


__all__ = [
    "ConnectedAccount",
    "Deposit",
    "DepositStatus",
    "ReconciliationReport",
    "StripeEvent",
    "StripeEventStatus",
    "Withdrawal",
    "WithdrawalStatus",
]
