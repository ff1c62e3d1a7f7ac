"""Candle upkeep: one upsert per (interval, bucket) touched by a batch of trades.

Runs inside the runner's batch transaction, so candles never disagree with trades.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import connection

from exchange.marketdata.models import INTERVALS, Candle


def candles_apply(
    *, market_id: int, moment: int, trades: Iterable[Sequence[int]], per_tick_lot: int
) -> dict[str, list[int]]:
    """Fold trades (price_ticks, lots) made at unix second ``moment`` into every interval.

    Returns each interval's candle as it now stands: [start, open, high, low, close, volume
    lots, quote volume, trade count].
    """
    trades = list(trades)
    if not trades:
        return {}
    prices = [price for price, _ in trades]
    lots = sum(quantity for _, quantity in trades)
    quote = sum(price * quantity for price, quantity in trades) * per_tick_lot
    opening, closing = prices[0], prices[-1]
    high, low = max(prices), min(prices)
    table = connection.ops.quote_name(Candle._meta.db_table)
    sql = (
        f'INSERT INTO {table} (market_id, "interval", start, open_ticks, high_ticks, low_ticks, '  # noqa: S608  # nosec B608
        "close_ticks, volume_lots, quote_volume, trade_count) "
        f"VALUES {', '.join(['(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)'] * len(INTERVALS))} "
        'ON CONFLICT (market_id, "interval", start) DO UPDATE SET '
        f"high_ticks = GREATEST({table}.high_ticks, excluded.high_ticks), "
        f"low_ticks = LEAST({table}.low_ticks, excluded.low_ticks), "
        "close_ticks = excluded.close_ticks, "
        f"volume_lots = {table}.volume_lots + excluded.volume_lots, "
        f"quote_volume = {table}.quote_volume + excluded.quote_volume, "
        f"trade_count = {table}.trade_count + excluded.trade_count "
        'RETURNING "interval", start,'
        " open_ticks, high_ticks, low_ticks, close_ticks, "
        "volume_lots, quote_volume, trade_count"
    )
    rows = [
        (market_id, name, moment - moment % seconds, opening, high, low, closing, lots, quote,
         len(trades))
        for name, seconds in INTERVALS.items()
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])
        return {name: list(values) for name, *values in cursor.fetchall()}
