"""Byte-stable JSON lines for engine events (the replay tool's output format).

Events only hold ints, ``None`` and a few fixed ASCII words, so they are formatted directly;
this is faster than a JSON library and cannot drift with one's settings.
"""

from __future__ import annotations

from typing import Any


def _trade(event: tuple[Any, ...]) -> str:
    _, taker, maker, price, qty, side = event
    return (
        f'{{"ev":"trade","taker":{taker},"maker":{maker},"price":{price},'
        f'"qty":{qty},"taker_side":"{side}"}}'
    )


def _filled(event: tuple[Any, ...]) -> str:
    return f'{{"ev":"filled","id":{event[1]}}}'


def _rest(event: tuple[Any, ...]) -> str:
    return f'{{"ev":"rest","id":{event[1]},"price":{event[2]},"qty":{event[3]}}}'


def _cancel(event: tuple[Any, ...]) -> str:
    return f'{{"ev":"cancel","id":{event[1]},"qty":{event[2]},"reason":"{event[3]}"}}'


def _reject(event: tuple[Any, ...]) -> str:
    order_id = "null" if event[1] is None else event[1]
    return f'{{"ev":"reject","id":{order_id},"reason":"{event[2]}"}}'


def _rows(rows: list[tuple[int, int, int]]) -> str:
    return ",".join([f"[{order_id},{price},{qty}]" for order_id, price, qty in rows])


def _snapshot(event: tuple[Any, ...]) -> str:
    return f'{{"ev":"snapshot","bids":[{_rows(event[1])}],"asks":[{_rows(event[2])}]}}'


FORMATTERS = {
    "trade": _trade,
    "filled": _filled,
    "rest": _rest,
    "cancel": _cancel,
    "reject": _reject,
    "snapshot": _snapshot,
}


def event_json(event: tuple[Any, ...]) -> str:
    """One event as a compact JSON object (no trailing newline)."""
    return FORMATTERS[event[0]](event)
