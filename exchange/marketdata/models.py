"""OHLCV candles, maintained by the runner in the same transaction as the trades."""

from django.db import models
from django.db.models import Q

from exchange.markets.models import Market

INTERVALS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}


class Candle(models.Model):
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="candles")
    interval = models.CharField(max_length=3)
    start = models.BigIntegerField(help_text="Unix seconds of the candle's opening.")
    open_ticks = models.BigIntegerField()
    high_ticks = models.BigIntegerField()
    low_ticks = models.BigIntegerField()
    close_ticks = models.BigIntegerField()
    volume_lots = models.BigIntegerField()
    quote_volume = models.BigIntegerField(help_text="Quote ledger units traded.")
    trade_count = models.BigIntegerField()

    class Meta:
        ordering = ["market", "interval", "start"]
        constraints = [
            models.UniqueConstraint(
                fields=["market", "interval", "start"], name="candle_unique_bucket"
            ),
            models.CheckConstraint(
                condition=Q(interval__in=list(INTERVALS)), name="candle_known_interval"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.market_id} {self.interval} @ {self.start}"
