"""Publishes what the runner committed to channel-layer groups (called after commit only).

Groups: ``market.<market id>`` gets trades and book changes; ``user.<user id>`` gets that
user's order updates and fills. Channels delivers at most once, so book updates carry ``seq``.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def market_group(market_id: int) -> str:
    return f"market.{market_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def publish_batch(
    *,
    market_id: int,
    market_message: dict[str, Any] | None,
    user_messages: dict[int, list[dict[str, Any]]],
) -> None:
    """``market_message`` None: only the users' updates (the runner coalesces public data)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(_send_all)(layer, market_id, market_message, user_messages)
    except Exception:  # a feed outage must never stop the runner; clients resync by seq
        logger.exception("publishing market %s failed", market_id)


async def _send_all(
    layer: Any,
    market_id: int,
    market_message: dict[str, Any] | None,
    user_messages: dict[int, list[dict[str, Any]]],
) -> None:
    if market_message is not None:
        await layer.group_send(market_group(market_id), {"type": "market.batch", **market_message})
    for user_id, updates in user_messages.items():
        await layer.group_send(user_group(user_id), {"type": "user.updates", "updates": updates})
