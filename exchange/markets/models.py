"""Markets: one tradeable contract each, with its contract spec and trading rules."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from exchange.markets.currencies import CURRENCY_DECIMALS, TOKENS_PER_MTOK, currency_choices


class TokenKind(models.TextChoices):
    INPUT = "input", "Input tokens"
    OUTPUT = "output", "Output tokens"


class MarketStatus(models.TextChoices):
    OPEN = "open", "Open"
    HALTED = "halted", "Halted"
    CANCEL_ONLY = "cancel_only", "Cancel only"
    CLOSED = "closed", "Closed"


class Market(models.Model):
    """A contract spec plus its trading rules.

    Prices are quote currency per MTok (1,000,000 tokens); quantities are in MTok. Inside,
    prices are integer ticks and quantities integer lots (see the ``*_to_*`` helpers).
    """

    symbol = models.CharField(max_length=40, unique=True)
    base = models.CharField(max_length=32, help_text="The token product, e.g. QWEN3.6-PLUS-OUT.")
    quote_currency = models.CharField(max_length=3, choices=currency_choices())
    model_name = models.CharField(max_length=64)
    token_kind = models.CharField(max_length=6, choices=TokenKind.choices)
    region = models.CharField(max_length=32, help_text="Data residency, e.g. cn-east.")
    min_throughput_tps = models.PositiveIntegerField(
        help_text="Service level: minimum tokens per second per stream."
    )
    max_first_token_latency_ms = models.PositiveIntegerField(
        help_text="Service level: maximum time to first token in milliseconds."
    )
    default_max_tokens = models.PositiveIntegerField(
        default=4096,
        help_text="Delivery: completion tokens reserved when a request gives no max_tokens.",
    )
    sla_credit_rate = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal(1),
        help_text="Delivery: share of a request's cost credited to the buyer on an SLA miss.",
    )
    tick_size = models.DecimalField(
        max_digits=20, decimal_places=8, help_text="Price step, quote currency per MTok."
    )
    lot_size = models.DecimalField(
        max_digits=20, decimal_places=6, help_text="Quantity step in MTok (0.001 = 1,000 tokens)."
    )
    min_quantity = models.DecimalField(max_digits=20, decimal_places=6)
    maker_fee_rate = models.DecimalField(max_digits=6, decimal_places=5, default=Decimal("0.001"))
    taker_fee_rate = models.DecimalField(max_digits=6, decimal_places=5, default=Decimal("0.002"))
    price_band = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.10"),
        help_text="Market-order price protection: fraction away from the best opposite price.",
    )
    status = models.CharField(
        max_length=12, choices=MarketStatus.choices, default=MarketStatus.OPEN
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=Q(tick_size__gt=0), name="market_tick_positive"),
            models.CheckConstraint(condition=Q(lot_size__gt=0), name="market_lot_positive"),
            models.CheckConstraint(
                condition=Q(min_quantity__gte=models.F("lot_size")), name="market_min_ge_lot"
            ),
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0, maker_fee_rate__lt=Decimal("0.1")),
                name="market_maker_fee_range",
            ),
            models.CheckConstraint(
                condition=Q(taker_fee_rate__gte=0, taker_fee_rate__lt=Decimal("0.1")),
                name="market_taker_fee_range",
            ),
            models.CheckConstraint(
                condition=Q(sla_credit_rate__gte=0, sla_credit_rate__lte=1),
                name="market_sla_credit_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(default_max_tokens__gt=0), name="market_default_max_tokens_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.symbol

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from exchange.errors import InvalidMarketConfiguration
        from exchange.markets.services import market_configuration_validate

        try:
            market_configuration_validate(
                quote_currency=self.quote_currency,
                tick_size=self.tick_size,
                lot_size=self.lot_size,
                min_quantity=self.min_quantity,
                maker_fee_rate=self.maker_fee_rate,
                taker_fee_rate=self.taker_fee_rate,
                price_band=self.price_band,
            )
        except InvalidMarketConfiguration as error:
            raise ValidationError(error.details) from error

    # --- unit conversions (pure arithmetic, exact) ---------------------------------------------
    @property
    def tokens_per_lot(self) -> int:
        return int(self.lot_size * TOKENS_PER_MTOK)

    @property
    def quote_decimals(self) -> int:
        return CURRENCY_DECIMALS[self.quote_currency]

    @property
    def units_per_tick_lot(self) -> int:
        """Ledger units of quote currency for one tick of price times one lot of quantity."""
        return int((self.tick_size * self.lot_size).scaleb(self.quote_decimals))

    @property
    def is_accepting_orders(self) -> bool:
        return self.status == MarketStatus.OPEN
