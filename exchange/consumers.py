"""Websocket endpoint ``/ws/v1``.

Until the market-data feeds land, the endpoint accepts connections and answers ``ping`` with
``pong`` and anything else with an error message, so clients can check connectivity.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

MAX_MESSAGE_BYTES = 4096


class StatusConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
            await self.send_json(
                {"type": "error", "code": "invalid", "message": "message too large or not text"}
            )
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_json({"type": "error", "code": "bad_json", "message": "not JSON"})
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("op") == "ping":
            await self.send_json({"type": "pong"})
            return
        await self.send_json(
            {"type": "error", "code": "unknown_op", "message": "unknown or unsupported op"}
        )
