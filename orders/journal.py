"""A market's journal as the engine replay tool's JSON lines (``python -m exchange.engine.replay``).

Market orders appear as what the engine ran: limit IOC/FOK orders at their protection price;
GTD orders as GTC (the runner expires them with a cancel).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from exchange.markets.models import Market
from exchange.runner.core import engine_price, engine_tif
from orders.models import CommandKind, OrderCommand


def journal_lines(*, market: Market) -> Iterator[str]:
    commands = (
        OrderCommand.objects.filter(market=market, seq__isnull=False)
        .select_related("order")
        .order_by("seq")
        .iterator(chunk_size=2000)
    )
    for command in commands:
        order = command.order
        if command.kind == CommandKind.NEW and order.engine_seq is None:
            continue  # refused by the runner (market halted): it never reached the book
        if command.kind == CommandKind.NEW:
            body = {
                "op": "new",
                "id": order.id,
                "account": str(order.user_id),
                "side": order.side,
                "type": "limit",
                "price": engine_price(order),
                "qty": order.quantity_lots,
                "tif": engine_tif(order),
                "post_only": order.post_only,
                "stp": order.stp,
            }
        else:
            body = {"op": "cancel", "id": order.id}
        yield json.dumps(body, separators=(",", ":"))
