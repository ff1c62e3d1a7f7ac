"""The engine's snapshot format.

A snapshot is ``MAGIC + VERSION + zlib(payload)``:

- ``MAGIC`` is the 4 bytes ``b"TXEB"``; ``VERSION`` is a big-endian unsigned 16-bit integer,
  currently ``1``.
- ``payload`` is canonical JSON (ASCII, no spaces, keys in this order)::

      {"bids":[[id,account,price,qty],...],"asks":[[id,account,price,qty],...],
       "used":[[first,last],...]}

  ``bids`` and ``asks`` list every resting order in priority order (best price first, oldest
  first within a price). ``used`` is the set of consumed order ids as sorted, disjoint, inclusive
  ranges; ids of orders that were accepted stay used forever, ids of rejected commands are not
  in it.

The payload is a pure function of the book's observable state, so equal states give equal
payloads; ``Book.state_hash()`` is the sha256 of the payload (not of the compressed blob, whose
bytes could differ between zlib builds). A reader refuses unknown magic or versions.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

MAGIC: Final = b"TXEB"
VERSION: Final = 1
_HEADER: Final = struct.Struct(">4sH")

OrderRow = tuple[int, str, int, int]


class SnapshotError(ValueError):
    """The blob is not a snapshot this engine can restore."""


@dataclass(frozen=True, slots=True)
class State:
    """The engine state a snapshot carries."""

    bids: list[OrderRow]
    asks: list[OrderRow]
    used_ids: Iterable[int]


def id_ranges(ids: Iterable[int]) -> list[list[int]]:
    """Sorted disjoint inclusive ranges covering exactly ``ids``."""
    ranges: list[list[int]] = []
    for order_id in sorted(ids):
        if ranges and ranges[-1][1] + 1 == order_id:
            ranges[-1][1] = order_id
        else:
            ranges.append([order_id, order_id])
    return ranges


def canonical_payload(state: State) -> bytes:
    document = {
        "bids": [list(row) for row in state.bids],
        "asks": [list(row) for row in state.asks],
        "used": id_ranges(state.used_ids),
    }
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def encode(state: State) -> bytes:
    return _HEADER.pack(MAGIC, VERSION) + zlib.compress(canonical_payload(state), 6)


def _is_int(value: Any) -> bool:
    return value.__class__ is int


def _order_rows(value: Any) -> list[OrderRow]:
    if not isinstance(value, list):
        raise SnapshotError("orders must be a list")
    rows: list[OrderRow] = []
    for row in value:
        if not (
            isinstance(row, list)
            and len(row) == 4
            and _is_int(row[0])
            and isinstance(row[1], str)
            and row[1]
            and _is_int(row[2])
            and row[2] > 0
            and _is_int(row[3])
            and row[3] > 0
        ):
            raise SnapshotError(f"malformed order row {row!r}")
        rows.append((row[0], row[1], row[2], row[3]))
    return rows


def _used_ids(value: Any) -> set[int]:
    if not isinstance(value, list):
        raise SnapshotError("used ids must be a list")
    used: set[int] = set()
    previous_last: int | None = None
    for pair in value:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and _is_int(pair[0])
            and _is_int(pair[1])
            and pair[0] <= pair[1]
            and (previous_last is None or pair[0] > previous_last + 1)
        ):
            raise SnapshotError(f"malformed id range {pair!r}")
        used.update(range(pair[0], pair[1] + 1))
        previous_last = pair[1]
    return used


def decode(blob: bytes) -> State:
    if len(blob) < _HEADER.size:
        raise SnapshotError("too short for a snapshot header")
    magic, version = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise SnapshotError("not an engine snapshot")
    if version != VERSION:
        raise SnapshotError(f"unsupported snapshot version {version}")
    try:
        document = json.loads(zlib.decompress(blob[_HEADER.size :]))
    except (zlib.error, ValueError) as error:
        raise SnapshotError(f"corrupt snapshot payload: {error}") from error
    if not isinstance(document, dict) or list(document) != ["bids", "asks", "used"]:
        raise SnapshotError("unexpected snapshot document")
    return State(
        bids=_order_rows(document["bids"]),
        asks=_order_rows(document["asks"]),
        used_ids=_used_ids(document["used"]),
    )
