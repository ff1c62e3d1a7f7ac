"""Market-data reads: ticker, book, trades, candles — from runner-maintained state, cheap."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import Max, Min, QuerySet, Sum

from exchange.marketdata.book_feed import SNAPSHOT_DEPTH
from exchange.marketdata.checksum import book_checksum
from exchange.marketdata.models import INTERVALS, Candle
from exchange.marketdata.state import book_key, book_state_load, ticker_key
from exchange.markets.models import Market
from exchange.times import ms_text, seconds_text, time_ms
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
    # the runner's last batch: at or after the book's last change (the cache held the exact one)
    changed = engine.updated_at if engine else None
    state = {
        "seq": engine.book_seq if engine else 0,
        "bids": sides["buy"],
        "asks": sides["sell"],
        "checksum": book_checksum(sides["buy"], sides["sell"]),
        "time": time_ms(changed) if changed else None,
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
        "time": book_time(state),
        "bids": [
            [ticks_to_price(market, p), lots_to_quantity(market, q), n]
            for p, q, n in state["bids"][:depth]
        ],
        "asks": [
            [ticks_to_price(market, p), lots_to_quantity(market, q), n]
            for p, q, n in state["asks"][:depth]
        ],
    }


def book_time(state: dict[str, Any]) -> str | None:
    """The time of the book's last change (None: it never changed since the exchange began)."""
    moment = state.get("time")
    return ms_text(moment) if moment is not None else None


def ticker_get(*, market: Market) -> dict[str, Any]:
    """Last price, best bid/ask and 24h statistics (from 1m candles), cached for a second."""
    key = ticker_key(market.id)
    cached = cache.get(key)
    if cached is not None:
        return cached
    now_ms = time.time_ns() // 1_000_000
    now = now_ms // 1000
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
        "time": ms_text(now_ms),
    }
    cache.set(key, ticker, timeout=1)
    return ticker


def trade_public(market: Market, trade_id: int, ticks: int, lots: int, side: str, ms: int):
    return {
        "id": trade_id,
        "price": ticks_to_price(market, ticks),
        "quantity": lots_to_quantity(market, lots),
        "taker_side": side,
        "time": ms_text(ms),
    }


TRADE_FIELDS = ("id", "price_ticks", "quantity_lots", "taker_side", "created_at")


def trades_query(*, market: Market) -> QuerySet[Trade]:
    """The market's trades as rows of ``TRADE_FIELDS`` (page them with ``trades_public``)."""
    return Trade.objects.filter(market=market).values(*TRADE_FIELDS)  # type: ignore[return-value]


def trades_public(market: Market, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        trade_public(
            market, row["id"], row["price_ticks"], row["quantity_lots"], row["taker_side"],
            time_ms(row["created_at"]),
        )
        for row in rows
    ]  # fmt: skip


def trades_recent(*, market: Market, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` trades, newest first."""
    return trades_public(market, list(trades_query(market=market).order_by("-id")[:limit]))


CANDLE_FIELDS = (
    "start", "open_ticks", "high_ticks", "low_ticks", "close_ticks", "volume_lots",
    "quote_volume", "trade_count",
)  # fmt: skip


def candle_public(market: Market, values: list[int]) -> dict[str, Any]:
    """``values`` as ``CANDLE_FIELDS``; ``time`` is the start of the candle's period."""
    start, opening, high, low, close, volume, quote_volume, count = values
    return {
        "time": seconds_text(start),
        "open": ticks_to_price(market, opening),
        "high": ticks_to_price(market, high),
        "low": ticks_to_price(market, low),
        "close": ticks_to_price(market, close),
        "volume": lots_to_quantity(market, volume),
        "quote_volume": units_to_amount(market, quote_volume),
        "trades": count,
    }


def candles_query(*, market: Market, interval: str) -> QuerySet[Candle]:
    """The market's candles of ``interval`` as rows of ``CANDLE_FIELDS``."""
    return Candle.objects.filter(market=market, interval=interval).values(*CANDLE_FIELDS)  # type: ignore[return-value]


def candles_public(market: Market, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [candle_public(market, [row[name] for name in CANDLE_FIELDS]) for row in rows]


def candle_latest(*, market: Market, interval: str) -> dict[str, Any] | None:
    """The newest candle of ``interval`` (the one still open, if trades came in its period)."""
    rows = list(candles_query(market=market, interval=interval).order_by("-start")[:1])
    return candles_public(market, rows)[0] if rows else None


def interval_valid(interval: str) -> bool:
    return interval in INTERVALS
