"""The reference client of the book feed: snapshot + updates, gap detection, checksum."""

from __future__ import annotations

import struct
import zlib
from decimal import Decimal
from typing import Any


class BookClient:
    def __init__(self, tick_size: str, lot_size: str) -> None:
        self.tick = Decimal(tick_size)
        self.lot = Decimal(lot_size)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.seq: int | None = None
        self.gaps = 0
        self.updates = 0

    def _int(self, text: str, step: Decimal) -> int:
        value = Decimal(text) / step
        if value != value.to_integral_value():
            raise AssertionError(f"{text} is not a multiple of {step}")
        return int(value)

    def _apply_levels(self, side: dict[int, int], levels: list[list[str]]) -> None:
        for price, quantity in levels:
            ticks, lots = self._int(price, self.tick), self._int(quantity, self.lot)
            if lots == 0:
                side.pop(ticks, None)
            else:
                side[ticks] = lots

    def checksum(self) -> int:
        bids = sorted(self.bids.items(), reverse=True)[:10]
        asks = sorted(self.asks.items())[:10]
        return zlib.crc32(b"".join(struct.pack(">QQ", p, q) for p, q in bids + asks))

    def on_message(self, message: dict[str, Any]) -> str:
        """Apply a book message. Returns "ok", or "gap" when the client must resubscribe."""
        if message["type"] == "snapshot":
            self.bids, self.asks = {}, {}
            self._apply_levels(self.bids, message["bids"])
            self._apply_levels(self.asks, message["asks"])
            self.seq = message["seq"]
            assert self.checksum() == message["checksum"], "snapshot checksum"
            return "ok"
        if self.seq is None:
            return "ok"  # waiting for the snapshot after a resubscribe
        if message["seq"] != self.seq + 1:
            self.gaps += 1
            self.seq = None
            return "gap"
        self._apply_levels(self.bids, message["bids"])
        self._apply_levels(self.asks, message["asks"])
        self.seq = message["seq"]
        self.updates += 1
        if self.checksum() != message["checksum"]:
            self.seq = None
            return "gap"
        return "ok"

    def levels(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())
