"""The order-book checksum of the websocket ``book`` channel.

Computed over integers, never over decimal strings (string checksums break on formatting edge
cases such as trailing zeros or exponent notation):

1. Take the top 10 bid levels (best = highest price first) and the top 10 ask levels (best =
   lowest price first) after applying the update; fewer if the book has fewer.
2. Convert each level to integers: ``ticks = price / tick_size`` and ``lots = quantity /
   lot_size`` (exact; the market's sizes are in ``GET /api/v1/markets/{symbol}``).
3. Bytes: for each bid level, then each ask level, the price ticks and the lots, each as an
   unsigned 64-bit big-endian integer (16 bytes per level). An empty book is zero bytes.
4. The checksum is CRC-32 (ISO-HDLC / IEEE 802.3, as zlib.crc32 and most libraries compute it)
   of those bytes, as an unsigned integer.

``tests/marketdata/fixtures/checksums.json`` holds cases a client in any language can check.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

DEPTH = 10
_LEVEL = struct.Struct(">QQ")


def book_checksum(
    bids: Sequence[Sequence[int]], asks: Sequence[Sequence[int]], depth: int = DEPTH
) -> int:
    """CRC-32 of the top ``depth`` levels; ``bids``/``asks`` are (ticks, lots, ...) best first."""
    payload = b"".join(_LEVEL.pack(level[0], level[1]) for level in bids[:depth])
    payload += b"".join(_LEVEL.pack(level[0], level[1]) for level in asks[:depth])
    return zlib.crc32(payload)
