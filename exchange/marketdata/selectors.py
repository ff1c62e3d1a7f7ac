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


def price_text(market: Market, ticks: int | None) -> str | None:
    if ticks is None:
        return None
    return format((market.tick_size * ticks).normalize(), "f")


def quantity_text(market: Market, lots: int) -> str:
    return format((market.lot_size * lots).normalize(), "f") if lots else "0"


def quote_text(market: Market, units: int) -> str:
    return format(Decimal(units).scaleb(-market.quote_decimals).normalize(), "f") if units else "0"


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
            [price_text(market, p), quantity_text(market, q), n]
            for p, q, n in state["bids"][:depth]
        ],
        "asks": [
            [price_text(market, p), quantity_text(market, q), n]
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
        "last": price_text(market, last),
        "bid": price_text(market, best_bid[0]) if best_bid else None,
        "bid_quantity": quantity_text(market, best_bid[1]) if best_bid else None,
        "ask": price_text(market, best_ask[0]) if best_ask else None,
        "ask_quantity": quantity_text(market, best_ask[1]) if best_ask else None,
        "open_24h": price_text(market, first),
        "high_24h": price_text(market, stats["high"]),
        "low_24h": price_text(market, stats["low"]),
        "volume_24h": quantity_text(market, volume),
        "volume_tokens_24h": volume * market.tokens_per_lot,
        "quote_volume_24h": quote_text(market, stats["quote_volume"] or 0),
        "trades_24h": stats["trades"] or 0,
        "change_24h_percent": change,
        "time": now,
    }
    cache.set(key, ticker, timeout=1)
    return ticker


def trade_public(market: Market, trade_id: int, ticks: int, lots: int, side: str, ms: int):
    return {
        "id": trade_id,
        "price": price_text(market, ticks),
        "quantity": quantity_text(market, lots),
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
        "open": price_text(market, opening),
        "high": price_text(market, high),
        "low": price_text(market, low),
        "close": price_text(market, close),
        "volume": quantity_text(market, volume),
        "quote_volume": quote_text(market, quote_volume),
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
