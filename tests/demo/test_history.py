"""24 h of demo candles at start: what the charts and the 24 h ticker read, seeded once."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db.models import Max, Min, Sum

from exchange.demo.history import history_seed
from exchange.demo.simulator import Simulator
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.selectors import audit_run
from exchange.marketdata.models import INTERVALS, Candle
from exchange.marketdata.selectors import ticker_get
from exchange.markets.models import Market, MarketStatus
from orders.models import Trade

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 5, 3, 0, 30, tzinfo=UTC)


@pytest.fixture
def two_markets(markets: list[Market]) -> list[Market]:
    """A CNY and a USD market open, the rest closed (seeding each market takes a while)."""
    keep = ["QWEN3.6-PLUS-OUT-CNY", "LLAMA-4-MAVERICK-IN-USD"]
    Market.objects.exclude(symbol__in=keep).update(status=MarketStatus.CLOSED)
    return [m for m in markets if m.symbol in keep]


def test_seeds_a_day_of_one_minute_candles_per_market_and_nothing_else(
    markets: list[Market],
) -> None:
    transactions = LedgerTransaction.objects.count()
    seeded = history_seed(now=NOW)
    assert sorted(seeded) == sorted(m.symbol for m in markets)
    end = int(NOW.timestamp()) - 30  # the current minute is left to live trades
    for market in markets:
        minutes = Candle.objects.filter(market=market, interval="1m")
        assert minutes.count() == 1440
        span = minutes.aggregate(first=Min("start"), last=Max("start"))
        assert (span["first"], span["last"]) == (end - 86_400, end - 60)
    # candles move no value: no ledger entry, no trade; the ledger is as balanced as before
    assert LedgerTransaction.objects.count() == transactions
    assert not Trade.objects.exists()
    assert audit_run().is_ok


def test_longer_intervals_fold_the_minutes(two_markets: list[Market]) -> None:
    history_seed(now=NOW)
    market = two_markets[0]
    minutes = Candle.objects.filter(market=market, interval="1m")
    totals = minutes.aggregate(lots=Sum("volume_lots"), quote=Sum("quote_volume"),
                               trades=Sum("trade_count"), high=Max("high_ticks"),
                               low=Min("low_ticks"))  # fmt: skip
    for interval, seconds in INTERVALS.items():
        candles = Candle.objects.filter(market=market, interval=interval)
        assert candles.aggregate(
            lots=Sum("volume_lots"), quote=Sum("quote_volume"), trades=Sum("trade_count"),
            high=Max("high_ticks"), low=Min("low_ticks"),
        ) == totals  # fmt: skip
        assert all(start % seconds == 0 for start in candles.values_list("start", flat=True))
    hour = Candle.objects.filter(market=market, interval="1h").order_by("start")[5]
    inside = minutes.filter(start__gte=hour.start, start__lt=hour.start + 3600).order_by("start")
    assert hour.open_ticks == inside.first().open_ticks
    assert hour.close_ticks == inside.last().close_ticks


def test_history_stays_in_the_band_and_near_the_reference(two_markets: list[Market]) -> None:
    from exchange.demo.simulator import reference_ticks

    history_seed(now=NOW)
    for market in two_markets:
        reference = reference_ticks(market)
        band = Candle.objects.filter(market=market, interval="1m").aggregate(
            high=Max("high_ticks"), low=Min("low_ticks")
        )
        assert reference * (1 - market.price_band) <= band["low"]
        assert band["high"] <= reference * (1 + market.price_band)
        closes = sorted(
            Candle.objects.filter(market=market, interval="1m").values_list(
                "close_ticks", flat=True
            )
        )
        assert abs(closes[len(closes) // 2] - reference) <= reference * Decimal("0.01")


def test_a_second_start_seeds_nothing(two_markets: list[Market]) -> None:
    history_seed(now=NOW)
    count = Candle.objects.count()
    assert history_seed(now=NOW) == []
    assert Candle.objects.count() == count


def test_the_ticker_shows_24h_volume_and_a_sane_change_once_bots_trade(
    two_markets: list[Market],
) -> None:
    history_seed()
    simulator = Simulator(bots=6, rate=1.0, seed=5, symbols=["QWEN3.6-PLUS-OUT-CNY"])
    state = simulator.markets[0]
    for _ in range(5):
        simulator.step(state)
    assert Trade.objects.filter(market=state.market).exists()
    ticker = ticker_get(market=state.market)
    assert ticker["trades_24h"] > 1440
    assert Decimal(ticker["volume_24h"]) > 0
    assert abs(Decimal(ticker["change_24h_percent"])) < state.market.price_band * 100
