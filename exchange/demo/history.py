"""24 hours of simulated market history for the live demo, so that the charts, the 24 h change
and the 24 h volume mean something on the first page view.

What is written, and why only that: candles (every interval), the rows the charts and the
ticker's 24 h statistics read. Not trades: a trade is a settlement — ledger postings, holds,
buyers' lots and escrow — and faking 24 h of those would either invent money movements or need
thousands of orders through the runner with a rewound clock at every start. Candles move no
value, so the ledger stays exactly as it was (``ledger_audit`` passes) and the trade tape shows
only real trades, which the bots print within seconds. The history is simulated demo data: it
is written only when ``DEMO`` is on (``demo_start``; never by ``simulate`` against another
deployment), the log says so, and the README's demo section says so.

Idempotent: a market that has any candle already (seeded or traded) is left alone, so a
second ``make run`` seeds nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from exchange.demo.prices import PriceProcess, band_limits
from exchange.marketdata.models import INTERVALS, Candle
from exchange.markets.models import Market, MarketStatus

HISTORY_SECONDS = 86_400
STEPS_PER_MINUTE = 10  # price-process steps between two minutes' trades
TRADE_SIZES_MTOK = tuple(Decimal(size) for size in ("0.1", "0.25", "0.5", "1", "1", "2", "5"))


@dataclass
class Bucket:
    start: int
    open: int
    high: int
    low: int
    close: int
    lots: int = 0
    quote: int = 0
    trades: int = 0

    def add(self, other: Bucket) -> None:
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        self.close = other.close
        self.lots += other.lots
        self.quote += other.quote
        self.trades += other.trades


def minutes_simulate(market: Market, reference_ticks: int, *, end: int) -> list[Bucket]:
    """One-minute candles for the ``HISTORY_SECONDS`` before ``end`` (a minute boundary), from
    the demo's price process; deterministic per market symbol."""
    rng = random.Random(market.symbol)
    process = PriceProcess(reference_ticks=reference_ticks, band=market.price_band, rng=rng)
    low_band, high_band = band_limits(reference_ticks, market.price_band)
    lots_min = int(market.min_quantity / market.lot_size)
    minutes = []
    for start in range(end - HISTORY_SECONDS, end, 60):
        for _ in range(STEPS_PER_MINUTE):
            process.step()
        bucket: Bucket | None = None
        for _ in range(rng.randint(1, 6)):
            process.step()
            # a trade at the bid or the ask, a tick either side of the fair price
            ticks = min(high_band, max(low_band, process.fair_ticks + rng.choice((-1, 1))))
            lots = max(lots_min, int(rng.choice(TRADE_SIZES_MTOK) / market.lot_size))
            if bucket is None:
                bucket = Bucket(start=start, open=ticks, high=ticks, low=ticks, close=ticks)
            else:
                bucket.add(Bucket(start=start, open=ticks, high=ticks, low=ticks, close=ticks))
            bucket.lots += lots
            bucket.quote += ticks * lots * market.units_per_tick_lot
            bucket.trades += 1
        assert bucket is not None
        minutes.append(bucket)
    return minutes


def candles_build(market: Market, minutes: list[Bucket]) -> list[Candle]:
    """Every interval's candles, folded from the one-minute ones."""
    rows = []
    for interval, seconds in INTERVALS.items():
        folded: dict[int, Bucket] = {}
        for minute in minutes:
            start = minute.start - minute.start % seconds
            bucket = folded.get(start)
            if bucket is None:
                folded[start] = Bucket(**{**minute.__dict__, "start": start})
            else:
                bucket.add(minute)
        rows += [
            Candle(
                market=market, interval=interval, start=b.start, open_ticks=b.open,
                high_ticks=b.high, low_ticks=b.low, close_ticks=b.close, volume_lots=b.lots,
                quote_volume=b.quote, trade_count=b.trades,
            )
            for b in folded.values()
        ]  # fmt: skip
    return rows


def history_seed(*, now: datetime | None = None) -> list[str]:
    """Seed 24 h of candles for every open market that has none. Returns the symbols seeded."""
    from exchange.demo.simulator import reference_ticks

    moment = int((now or timezone.now()).timestamp())
    end = moment - moment % 60  # the current minute is left to live trades
    seeded = []
    for market_id in Market.objects.filter(status=MarketStatus.OPEN).values_list("id", flat=True):
        with transaction.atomic():
            # the market row's lock makes two starting processes seed a market once
            market = Market.objects.select_for_update().get(id=market_id)
            if Candle.objects.filter(market=market).exists():
                continue
            minutes = minutes_simulate(market, reference_ticks(market), end=end)
            Candle.objects.bulk_create(candles_build(market, minutes))
            seeded.append(market.symbol)
    return seeded
