"""Ledger rows: assets, accounts (with their cached balances), transactions and postings.

Sign convention: a posting's ``amount`` is signed and never zero; positive adds to the account's
bucket, negative takes from it. Every transaction's postings sum to zero per asset. An account's
``available`` and ``held`` columns are a cache of the sum of its postings per bucket, updated in
the same database transaction as the postings (``ledger_audit`` recomputes them).

The database enforces the invariants too (migrations 0002 and 0003): postings and transactions
are append-only; a statement-level trigger checks each INSERT of postings: each transaction
balances per asset (its legs arrive in one statement), it exists, and a posting's asset is its
account's asset; and user balances are never negative.
Rows are written only by ``exchange.ledger.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class AssetKind(models.TextChoices):
    CURRENCY = "currency", "Currency"
    TOKEN = "token", "Token"


class Asset(models.Model):
    """A currency (ledger unit 10**-decimals) or a market's token asset (unit: one token)."""

    code = models.CharField(max_length=40, primary_key=True)
    kind = models.CharField(max_length=8, choices=AssetKind.choices)
    decimals = models.PositiveSmallIntegerField(
        help_text="Ledger unit = 10**-decimals of the display unit (currencies); 0 for tokens."
    )
    market = models.OneToOneField(
        "markets.Market", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Bucket(models.TextChoices):
    AVAILABLE = "available", _("Available")
    HELD = "held", _("Held")


class SystemAccount(models.TextChoices):
    """Accounts for the outside world. Their balances may be negative (they mirror users'),
    except ESCROW's (a CHECK constraint)."""

    STRIPE_CLEARING = "stripe_clearing", "Stripe clearing"
    # Per provider (``Account.issuer``) and token asset: the capacity that provider listed.
    # Accounts without an issuer are the one shared account of before migration 0007 (history).
    CAPACITY_ISSUANCE = "capacity_issuance", "Capacity issuance"
    FEE_REVENUE = "fee_revenue", "Fee revenue"
    PAYOUTS_IN_FLIGHT = "payouts_in_flight", "Payouts in flight"
    ADJUSTMENTS = "adjustments", "Adjustments"
    # Buyers' payments for lots, per quote currency, until delivery, expiry or a credit.
    ESCROW = "escrow", "Escrow"
    # Tokens consumed through the gateway, per token asset (the sink of delivered tokens).
    DELIVERED = "delivered", "Delivered tokens"


class Account(models.Model):
    """One owner's (or one system account's) holding of one asset, with its cached balance."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_accounts",
    )
    system = models.CharField(max_length=20, choices=SystemAccount.choices, blank=True)
    # The provider a capacity issuance account issues for: one account per provider and token
    # asset, so that no provider's listings move another's issuance balance (nor its range).
    issuer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,  # the unique (system, asset, issuer) constraint serves
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="accounts")
    available = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(owner__isnull=False) & Q(system=""))
                | (Q(owner__isnull=True) & ~Q(system="")),
                name="ledger_account_owner_xor_system",
            ),
            # No user balance ever goes negative, nor escrow (it holds what buyers paid in:
            # below zero, a provider or buyer was paid money no one paid); the other system
            # accounts mirror the outside world and may. System accounts hold nothing on hold.
            models.CheckConstraint(
                condition=(Q(owner__isnull=True) & ~Q(system="escrow"))
                | Q(available__gte=0, held__gte=0),
                name="ledger_account_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(owner__isnull=False) | Q(held=0),
                name="ledger_account_system_holds_nothing",
            ),
            models.UniqueConstraint(
                fields=["owner", "asset"],
                condition=Q(owner__isnull=False),
                name="ledger_account_one_per_owner_asset",
            ),
            models.UniqueConstraint(
                fields=["system", "asset", "issuer"],
                condition=Q(owner__isnull=True),
                nulls_distinct=False,
                name="ledger_account_one_per_system_asset_issuer",
            ),
            models.CheckConstraint(
                condition=Q(issuer__isnull=True)
                | Q(owner__isnull=True, system="capacity_issuance"),
                name="ledger_account_issuer_only_for_issuance",
            ),
            # (account, asset) pairs that postings may name (checked per statement, migration
            # 0003; the target of 0002's composite foreign key).
            models.UniqueConstraint(fields=["id", "asset"], name="ledger_account_id_asset"),
        ]

    def __str__(self) -> str:
        holder = self.system or f"user {self.owner_id}"
        if self.issuer_id is not None:
            holder += f" of user {self.issuer_id}"
        return f"{holder} {self.asset_id}"

    @property
    def is_system(self) -> bool:
        return self.owner_id is None


class TransactionKind(models.TextChoices):
    DEPOSIT = "deposit", _("Deposit")
    WITHDRAWAL_HOLD = "withdrawal_hold", _("Withdrawal requested (hold)")
    WITHDRAWAL_COMPLETE = "withdrawal_complete", _("Withdrawal paid out")
    WITHDRAWAL_FAIL = "withdrawal_fail", _("Withdrawal failed (released)")
    HOLD = "hold", _("Hold")
    RELEASE = "release", _("Release")
    TRADE = "trade", _("Trade settlement (with fees)")
    CAPACITY_ISSUE = "capacity_issue", _("Capacity issued")
    CAPACITY_RETIRE = "capacity_retire", _("Capacity retired")
    ADJUSTMENT = "adjustment", _("Staff adjustment")
    DELIVERY = "delivery", _("Delivery settled (tokens consumed, SLA credit)")
    ESCROW_RELEASE = "escrow_release", _("Escrow released to the provider")
    LOT_EXPIRE = "lot_expire", _("Unconsumed tokens retired at expiry")
    # Migration 0007: each provider's issuance moved off the one shared account.
    ISSUANCE_SPLIT = "issuance_split", _("Capacity issuance split per provider")


class LedgerTransaction(models.Model):
    """An immutable group of postings that sums to zero per asset."""

    kind = models.CharField(max_length=20, choices=TransactionKind.choices)
    reference = models.CharField(
        max_length=120, help_text="What caused it: order:…, trade:…, stripe:evt_…, staff:…"
    )
    idempotency_key = models.CharField(max_length=200)  # unique: Meta (no LIKE index)
    request_hash = models.CharField(
        max_length=64, help_text="SHA-256 of the request; a replay with another body conflicts."
    )
    memo = models.TextField(blank=True, help_text="The reason of a staff adjustment.")
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,  # partial index below: only staff adjustments have one
    )
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "ledger_transaction"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"], name="ledger_transaction_idempotency_key_unique"
            ),
        ]
        indexes = [
            models.Index(
                fields=["staff_user"],
                condition=Q(staff_user__isnull=False),
                name="ledger_transaction_staff_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.reference}"


class Posting(models.Model):
    """One leg of a transaction: a signed, non-zero amount on one bucket of one account."""

    # The transaction, the account and the asset of a posting are checked by the statement-level
    # trigger of migration 0003 (one join per INSERT instead of one foreign-key lookup per row):
    # the asset is denormalised from the account so that the database can check that every leg
    # is in its account's asset.
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="postings", db_constraint=False
    )
    account = models.ForeignKey(
        Account,
        on_delete=models.PROTECT,
        related_name="postings",
        db_constraint=False,
        db_index=False,  # the (account, -id) index below serves
    )
    asset = models.ForeignKey(
        Asset, on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    bucket = models.CharField(max_length=9, choices=Bucket.choices)
    amount = models.BigIntegerField()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["account", "-id"], name="ledger_posting_account_id")]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_posting_amount_nonzero"),
            models.CheckConstraint(
                condition=Q(bucket__in=["available", "held"]), name="ledger_posting_bucket_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount:+d} {self.asset_id} {self.bucket} @ account {self.account_id}"
