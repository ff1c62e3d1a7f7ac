"""Orders, the command journal the engine runner consumes, trades, and provider capacity.

Units inside: prices in integer ticks, quantities in integer lots of the market, money in integer
ledger units of the quote currency (see ``exchange.markets``).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import pgettext_lazy

from exchange.markets.models import Market


class Side(models.TextChoices):
    BUY = "buy", "Buy"
    SELL = "sell", "Sell"


class OrderType(models.TextChoices):
    LIMIT = "limit", "Limit"
    MARKET = "market", "Market"


class TimeInForce(models.TextChoices):
    GTC = "GTC", "Good till cancelled"
    IOC = "IOC", "Immediate or cancel"
    FOK = "FOK", "Fill or kill"
    GTD = "GTD", "Good till date"


class SelfTrade(models.TextChoices):
    CANCEL_OLDEST = "cancel_oldest", "Cancel oldest"
    CANCEL_NEWEST = "cancel_newest", "Cancel newest"
    CANCEL_BOTH = "cancel_both", "Cancel both"


class OrderStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    OPEN = "open", "Open"
    PARTIALLY_FILLED = "partially_filled", "Partially filled"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"


OPEN_STATUSES = (OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
CLOSED_STATUSES = (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)


class Order(models.Model):
    # Every index costs each of the runner's order updates (a status change is never a HOT
    # update): the (user, status, -id) and (market, status) indexes serve these keys too.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    market = models.ForeignKey(
        Market, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    # NULL (not "") for "none given", so the per-user unique constraint ignores it.
    client_order_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, blank=True)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=6, choices=OrderType.choices)
    price_ticks = models.BigIntegerField(null=True, blank=True)
    # Market orders run in the engine as limit IOC/FOK orders at this protection price.
    protection_ticks = models.BigIntegerField(null=True, blank=True)
    quantity_lots = models.BigIntegerField()
    filled_lots = models.BigIntegerField(default=0)
    engine_seq = models.BigIntegerField(
        null=True, blank=True, help_text="Journal seq of the new-order command: time priority."
    )
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices)
    expire_time = models.DateTimeField(null=True, blank=True)
    post_only = models.BooleanField(default=False)
    stp = models.CharField(
        max_length=13, choices=SelfTrade.choices, default=SelfTrade.CANCEL_OLDEST
    )
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    cancel_reason = models.CharField(max_length=16, blank=True)
    hold_asset = models.CharField(max_length=40)
    hold_amount = models.BigIntegerField(help_text="Ledger units held when the order was placed.")
    hold_remaining = models.BigIntegerField(help_text="Ledger units still held for this order.")
    # The market's fee rates when the order was accepted: its hold was sized with them, so a
    # later change of the market's rates applies to new orders only.
    maker_fee_rate = models.DecimalField(max_digits=6, decimal_places=5, default=0)
    taker_fee_rate = models.DecimalField(max_digits=6, decimal_places=5, default=0)
    cost = models.BigIntegerField(default=0, help_text="Quote ledger units traded (before fees).")
    fee = models.BigIntegerField(default=0, help_text="Quote ledger units paid in fees.")
    capacity_listing = models.ForeignKey(
        "CapacityListing",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="orders",
        db_index=False,  # partial index below: only providers' asks have one
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "client_order_id"],
                condition=Q(client_order_id__isnull=False),
                name="order_unique_client_order_id",
            ),
            models.CheckConstraint(
                condition=Q(quantity_lots__gt=0), name="order_quantity_positive"
            ),
            models.CheckConstraint(
                condition=Q(filled_lots__gte=0, filled_lots__lte=models.F("quantity_lots")),
                name="order_filled_within_quantity",
            ),
            models.CheckConstraint(
                condition=Q(hold_remaining__gte=0), name="order_hold_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(type="market") | Q(price_ticks__gt=0), name="order_limit_has_price"
            ),
        ]
        indexes = [
            models.Index(fields=["user", "status", "-id"]),
            models.Index(fields=["market", "status"]),
            models.Index(
                fields=["expire_time"], condition=Q(expire_time__isnull=False), name="order_gtd_idx"
            ),
            models.Index(
                fields=["capacity_listing"],
                condition=Q(capacity_listing__isnull=False),
                name="order_listing_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.side} {self.market_id}"

    @property
    def remaining_lots(self) -> int:
        return self.quantity_lots - self.filled_lots


class CommandKind(models.TextChoices):
    NEW = "new", "New order"
    CANCEL = "cancel", "Cancel"
    EXPIRE = "expire", "Expire (GTD)"


class OrderCommand(models.Model):
    """The journal: an accepted command is a committed row before the engine sees it.

    The runner assigns ``seq`` (per market, gap-free) in the transaction that applies it, so the
    journal in ``seq`` order is exactly what the engine processed.
    """

    # (market, seq) and the pending index serve the market key
    market = models.ForeignKey(
        Market, on_delete=models.PROTECT, related_name="commands", db_index=False
    )
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="commands")
    kind = models.CharField(max_length=6, choices=CommandKind.choices)
    seq = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["market", "seq"], name="command_unique_market_seq"),
        ]
        indexes = [
            models.Index(
                fields=["market", "id"], condition=Q(seq__isnull=True), name="command_pending_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.order_id} seq={self.seq}"


class MarketEngineState(models.Model):
    """What the runner has committed for a market: its journal position and top of book."""

    market = models.OneToOneField(Market, on_delete=models.PROTECT, related_name="engine_state")
    seq = models.BigIntegerField(default=0)
    book_seq = models.BigIntegerField(default=0, help_text="Sequence of public book updates.")
    best_bid_ticks = models.BigIntegerField(null=True, blank=True)
    best_ask_ticks = models.BigIntegerField(null=True, blank=True)
    last_trade_ticks = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.market_id} @ {self.seq}"


class Trade(models.Model):
    # market, buyer and seller are served by the composite indexes below
    market = models.ForeignKey(
        Market, on_delete=models.PROTECT, related_name="trades", db_index=False
    )
    seq = models.BigIntegerField(help_text="The journal seq of the command that made it.")
    match_index = models.PositiveIntegerField(help_text="Position among that command's trades.")
    taker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="+")
    maker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="+")
    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    seller = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    taker_side = models.CharField(max_length=4, choices=Side.choices)
    price_ticks = models.BigIntegerField()
    quantity_lots = models.BigIntegerField()
    notional = models.BigIntegerField()
    buyer_fee = models.BigIntegerField()
    seller_fee = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["market", "seq", "match_index"], name="trade_unique_per_command"
            ),
            models.CheckConstraint(
                condition=Q(quantity_lots__gt=0), name="trade_quantity_positive"
            ),
        ]
        indexes = [
            models.Index(fields=["buyer", "-id"]),
            models.Index(fields=["seller", "-id"]),
            models.Index(fields=["market", "-id"]),
        ]

    def __str__(self) -> str:
        return f"trade {self.id}: {self.quantity_lots} lots @ {self.price_ticks}"


class ListingStatus(models.TextChoices):
    # "listing status" context: "Expired" is also a lot's status, translated differently.
    ACTIVE = "active", pgettext_lazy("listing status", "Active")
    EXPIRING = "expiring", pgettext_lazy("listing status", "Expiring")
    EXPIRED = "expired", pgettext_lazy("listing status", "Expired")


class CapacityListing(models.Model):
    """A provider's declaration: "I can serve N tokens of this market's spec until T"."""

    provider = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="listings"
    )
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="listings")
    quantity_lots = models.BigIntegerField()
    available_until = models.DateTimeField()
    ask_price_ticks = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=8, choices=ListingStatus.choices, default=ListingStatus.ACTIVE
    )
    retired_tokens = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity_lots__gt=0), name="listing_quantity_positive"
            ),
        ]
        indexes = [models.Index(fields=["status", "available_until"])]

    def __str__(self) -> str:
        return f"listing {self.id} of {self.provider_id} in {self.market_id}"
