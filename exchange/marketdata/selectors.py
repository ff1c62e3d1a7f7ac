"""Market-data reads: ticker, book, trades, candles — from runner-maintained state, cheap."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import Max, Min, Sum

from exchange.marketdata.book_feed import SNAPSHOT_DEPTH
from exchange.marketdata.checksum import book_checksum
from exchange.marketdata.models import INTERVALS, Candle
from exchange.marketdata.state import book_key, book_state_load, ticker_key
from exchange.markets.models import Market
from orders.models import MarketEngineState, Order, Trade
from orders.units import lots_to_quantity, ticks_to_price, units_to_amount


def book_state_get(*, market: Market) -> dict[str, Any]:
    """The book the runner published last: {seq, bids, asks, checksum} in ticks and lots.

    Falls back to aggregating resting orders when the cache is cold (after a cache restart).
    """
    state = book_state_load(market_id=market.id)
    if state is not None:
        return state
    engine = MarketEngineState.objects.filter(market=market).first()
    sides = {}
    for side, ordering in (("buy", "-price_ticks"), ("sell", "price_ticks")):
        levels: dict[int, list[int]] = {}
        resting = (
            Order.objects.filter(market=market, side=side, status__in=("open", "partially_filled"))
            .order_by(ordering)
            .values_list("price_ticks", "quantity_lots", "filled_lots")
        )
        for price, quantity, filled in resting:
            level = levels.setdefault(price, [price, 0, 0])
            level[1] += quantity - filled
            level[2] += 1
        sides[side] = list(levels.values())[:SNAPSHOT_DEPTH]
    state = {
        "seq": engine.book_seq if engine else 0,
        "bids": sides["buy"],
        "asks": sides["sell"],
        "checksum": book_checksum(sides["buy"], sides["sell"]),
    }
    # add, not set: never overwrite a newer state the runner stored meanwhile
    cache.add(book_key(market.id), state, timeout=None)
    return state


def book_public(*, market: Market, depth: int) -> dict[str, Any]:
    state = book_state_get(market=market)
    return {
        "market": market.symbol,
        "seq": state["seq"],
        "checksum": state["checksum"],
        "bids": [
            [ticks_to_price(market, p), lots_to_quantity(market, q), n]
            for p, q, n in state["bids"][:depth]
        ],
        "asks": [
            [ticks_to_price(market, p), lots_to_quantity(market, q), n]
            for p, q, n in state["asks"][:depth]
        ],
    }


def ticker_get(*, market: Market) -> dict[str, Any]:
    """Last price, best bid/ask and 24h statistics (from 1m candles), cached for a second."""
    key = ticker_key(market.id)
    cached = cache.get(key)
    if cached is not None:
        return cached
    now = int(time.time())
    since = now - 86400
    candles = Candle.objects.filter(market=market, interval="1m", start__gt=since - 60)
    stats = candles.aggregate(
        high=Max("high_ticks"),
        low=Min("low_ticks"),
        volume=Sum("volume_lots"),
        quote_volume=Sum("quote_volume"),
        trades=Sum("trade_count"),
    )
    first = candles.order_by("start").values_list("open_ticks", flat=True).first()
    engine = MarketEngineState.objects.filter(market=market).first()
    state = book_state_get(market=market)
    last = engine.last_trade_ticks if engine else None
    change = None
    if first and last:
        change = format(
            ((Decimal(last - first) / Decimal(first)) * 100).quantize(Decimal("0.01")), "f"
        )
    best_bid = state["bids"][0] if state["bids"] else None
    best_ask = state["asks"][0] if state["asks"] else None
    volume = stats["volume"] or 0
    ticker = {
        "market": market.symbol,
        "last": ticks_to_price(market, last),
        "bid": ticks_to_price(market, best_bid[0]) if best_bid else None,
        "bid_quantity": lots_to_quantity(market, best_bid[1]) if best_bid else None,
        "ask": ticks_to_price(market, best_ask[0]) if best_ask else None,
        "ask_quantity": lots_to_quantity(market, best_ask[1]) if best_ask else None,
        "open_24h": ticks_to_price(market, first),
        "high_24h": ticks_to_price(market, stats["high"]),
        "low_24h": ticks_to_price(market, stats["low"]),
        "volume_24h": lots_to_quantity(market, volume),
        "volume_tokens_24h": volume * market.tokens_per_lot,
        "quote_volume_24h": units_to_amount(market, stats["quote_volume"] or 0),
        "trades_24h": stats["trades"] or 0,
        "change_24h_percent": change,
        "time": now,
    }
    cache.set(key, ticker, timeout=1)
    return ticker


def trade_public(market: Market, trade_id: int, ticks: int, lots: int, side: str, ms: int):
    return {
        "id": trade_id,
        "price": ticks_to_price(market, ticks),
        "quantity": lots_to_quantity(market, lots),
        "taker_side": side,
        "time": ms,
    }


def trades_recent(*, market: Market, limit: int) -> list[dict[str, Any]]:
    rows = (
        Trade.objects.filter(market=market)
        .order_by("-id")
        .values_list("id", "price_ticks", "quantity_lots", "taker_side", "created_at")[:limit]
    )
    return [
        trade_public(market, i, p, q, s, int(created.timestamp() * 1000))
        for i, p, q, s, created in rows
    ]


def candle_public(market: Market, values: list[int]) -> dict[str, Any]:
    start, opening, high, low, close, volume, quote_volume, count = values
    return {
        "start": start,
        "open": ticks_to_price(market, opening),
        "high": ticks_to_price(market, high),
        "low": ticks_to_price(market, low),
        "close": ticks_to_price(market, close),
        "volume": lots_to_quantity(market, volume),
        "quote_volume": units_to_amount(market, quote_volume),
        "trades": count,
    }


def candles_list(
    *, market: Market, interval: str, start: int | None, end: int | None, limit: int
) -> list[dict[str, Any]]:
    candles = Candle.objects.filter(market=market, interval=interval)
    if start is not None:
        candles = candles.filter(start__gte=start)
    if end is not None:
        candles = candles.filter(start__lte=end)
    rows = candles.order_by("-start").values_list(
        "start", "open_ticks", "high_ticks", "low_ticks", "close_ticks", "volume_lots",
        "quote_volume", "trade_count",
    )[:limit]  # fmt: skip
    return [candle_public(market, list(row)) for row in reversed(rows)]


def interval_valid(interval: str) -> bool:
    return interval in INTERVALS
