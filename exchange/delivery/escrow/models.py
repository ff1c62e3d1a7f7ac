"""Lots (who a buyer's tokens came from, and the escrow behind them) and gateway reservations.

A **lot** is one fill's tokens as their holder holds them: market, provider, escrow price and
expiry, with counters of where the tokens went. Tokens leave a lot in four ways — delivered,
credited (served, but the request missed the service level), unconsumed (retired at expiry) and
moved (resold: a child lot carries them on) — and while a gateway request runs they are
``reserved``. The lot's escrow money leaves in three: ``earned`` (owed to the provider;
``released`` once paid, less ``fee`` to the exchange), ``credited`` (back to the buyer) and
``moved`` (to a child lot).

Money follows tokens by one rule (``exchange.delivery.escrow.lots.escrow_slice``): the tokens
drawn so far, whatever their way out, are worth ``floor(escrow × drawn / bought)``. Each draw's
value is the difference of that floor before and after it, so the last draw pays the exact
remainder and rounding never drifts. The database checks that rule on every row (migration
0002), with the per-lot identity ``delivered + credited + unconsumed + moved + reserved ≤
bought`` and, once closed, ``= bought`` with every escrowed unit paid out.

Rows are written only by ``exchange.delivery.escrow`` services and the engine runner's batch.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Lot(models.Model):
    holder = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="lots", db_index=False
    )
    market = models.ForeignKey(
        "markets.Market", on_delete=models.PROTECT, related_name="lots", db_index=False
    )
    provider = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # Every index costs each of the runner's lot inserts: trades and parents are never deleted,
    # so their foreign keys go unindexed.
    trade = models.ForeignKey(
        "orders.Trade", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        db_index=False,
    )
    price_ticks = models.BigIntegerField(help_text="The escrow price (the primary trade's).")
    seller_fee_rate = models.DecimalField(
        max_digits=6,
        decimal_places=5,
        help_text="The provider's fee rate of the primary trade, charged pro rata on release.",
    )
    expires_at = models.DateTimeField()
    bought_tokens = models.BigIntegerField()
    escrow_units = models.BigIntegerField(help_text="Quote ledger units paid into escrow.")
    reserved_tokens = models.BigIntegerField(default=0)
    delivered_tokens = models.BigIntegerField(default=0)
    credited_tokens = models.BigIntegerField(default=0)
    unconsumed_tokens = models.BigIntegerField(default=0)
    moved_tokens = models.BigIntegerField(default=0)
    earned_units = models.BigIntegerField(default=0, help_text="Owed to the provider so far.")
    released_units = models.BigIntegerField(default=0, help_text="Paid out of escrow (gross).")
    fee_units = models.BigIntegerField(default=0, help_text="Seller fee taken from releases.")
    credited_units = models.BigIntegerField(default=0, help_text="Credited back to the holder.")
    moved_units = models.BigIntegerField(default=0, help_text="Carried on by child lots.")
    created_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["expires_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(bought_tokens__gt=0, escrow_units__gte=0, price_ticks__gt=0),
                name="lot_bought_positive",
            ),
            models.CheckConstraint(
                condition=Q(
                    reserved_tokens__gte=0,
                    delivered_tokens__gte=0,
                    credited_tokens__gte=0,
                    unconsumed_tokens__gte=0,
                    moved_tokens__gte=0,
                    earned_units__gte=0,
                    released_units__gte=0,
                    fee_units__gte=0,
                    credited_units__gte=0,
                    moved_units__gte=0,
                ),
                name="lot_counters_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(
                    bought_tokens__gte=F("delivered_tokens")
                    + F("credited_tokens")
                    + F("unconsumed_tokens")
                    + F("moved_tokens")
                    + F("reserved_tokens")
                ),
                name="lot_tokens_within_bought",
            ),
            models.CheckConstraint(
                condition=Q(
                    escrow_units__gte=F("earned_units") + F("credited_units") + F("moved_units"),
                    earned_units__gte=F("released_units"),
                    released_units__gte=F("fee_units"),
                ),
                name="lot_money_within_escrow",
            ),
            models.CheckConstraint(
                condition=Q(closed_at__isnull=True)
                | Q(
                    reserved_tokens=0,
                    bought_tokens=F("delivered_tokens")
                    + F("credited_tokens")
                    + F("unconsumed_tokens")
                    + F("moved_tokens"),
                    escrow_units=F("released_units") + F("credited_units") + F("moved_units"),
                ),
                name="lot_closed_settled",
            ),
        ]
        # Every index costs each of the runner's lot inserts: only the open lots and the lots
        # owing the provider are indexed beyond the key.
        indexes = [
            # a holder's open lots in a market, earliest expiry first (runner, reservations)
            models.Index(
                fields=["holder", "market", "expires_at", "id"],
                condition=Q(closed_at__isnull=True),
                name="lot_open_holder_idx",
            ),
            models.Index(
                fields=["expires_at"],
                condition=Q(closed_at__isnull=True),
                name="lot_open_expiry_idx",
            ),
            # lots with money owed to the provider (the release task)
            models.Index(
                fields=["provider", "market"],
                condition=Q(earned_units__gt=F("released_units")),
                name="lot_unreleased_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"lot {self.id}: {self.bought_tokens} tokens of market {self.market_id}"

    @property
    def remaining_tokens(self) -> int:
        """Tokens still in the lot, reserved or not."""
        return self.bought_tokens - (
            self.delivered_tokens
            + self.credited_tokens
            + self.unconsumed_tokens
            + self.moved_tokens
        )

    @property
    def free_tokens(self) -> int:
        """Tokens that neither left the lot nor are reserved by a running request."""
        return self.remaining_tokens - self.reserved_tokens

    @property
    def outstanding_units(self) -> int:
        """Escrow still held for this lot."""
        return self.escrow_units - self.released_units - self.credited_units - self.moved_units


class ReservationStatus(models.TextChoices):
    OPEN = "open", "Open"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"


class Reservation(models.Model):
    """A gateway request's worst case, held against one provider's lots of a model's pair."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reservations"
    )
    provider = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    input_market = models.ForeignKey(
        "markets.Market", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    output_market = models.ForeignKey(
        "markets.Market", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    key = models.CharField(max_length=200, help_text="Idempotency: the generation id.")
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    used_input_tokens = models.BigIntegerField(default=0)
    used_output_tokens = models.BigIntegerField(default=0)
    input_cost_units = models.BigIntegerField(default=0)
    output_cost_units = models.BigIntegerField(default=0)
    credit_units = models.BigIntegerField(default=0)
    sla_missed = models.BooleanField(default=False)
    status = models.CharField(
        max_length=8, choices=ReservationStatus.choices, default=ReservationStatus.OPEN
    )
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["key"], name="reservation_key_unique"),
            models.CheckConstraint(
                condition=Q(input_tokens__gte=0, output_tokens__gte=0)
                & Q(used_input_tokens__gte=0, used_input_tokens__lte=F("input_tokens"))
                & Q(used_output_tokens__gte=0, used_output_tokens__lte=F("output_tokens"))
                & Q(input_cost_units__gte=0, output_cost_units__gte=0, credit_units__gte=0),
                name="reservation_amounts_valid",
            ),
            models.CheckConstraint(
                condition=Q(status="open", settled_at__isnull=True)
                | (~Q(status="open") & Q(settled_at__isnull=False)),
                name="reservation_closed_has_time",
            ),
        ]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(status="open"),
                name="reservation_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"reservation {self.id} ({self.status})"


class ReservationPart(models.Model):
    """The tokens a reservation holds on one lot, and what settling drew from it."""

    reservation = models.ForeignKey(Reservation, on_delete=models.PROTECT, related_name="parts")
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="reservation_parts")
    tokens = models.BigIntegerField()
    used_tokens = models.BigIntegerField(default=0)
    cost_units = models.BigIntegerField(default=0)
    credit_units = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(tokens__gt=0, used_tokens__gte=0, used_tokens__lte=F("tokens"))
                & Q(cost_units__gte=0, credit_units__gte=0, credit_units__lte=F("cost_units")),
                name="reservation_part_valid",
            ),
            models.UniqueConstraint(fields=["reservation", "lot"], name="reservation_part_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.tokens} tokens of lot {self.lot_id}"
