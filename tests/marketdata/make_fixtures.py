"""Regenerate tests/marketdata/fixtures/checksums.json: python -m tests.marketdata.make_fixtures

The cases are written by hand-picked rules below; the expected checksums come from zlib.crc32
over the documented byte format, computed independently of exchange.marketdata.checksum.
"""

import json
import struct
import zlib
from decimal import Decimal
from pathlib import Path

CASES = [
    ("empty book", "0.01", "0.001", [], []),
    ("one bid", "0.01", "0.001", [["8.01", "1.5"]], []),
    ("one ask", "0.01", "0.001", [], [["8.02", "0.25"]]),
    ("trailing zeros do not matter", "0.01", "0.001", [["8.10", "1.500"]], [["8.20", "2.000"]]),
    (
        "twelve levels a side, only the top ten count",
        "0.01",
        "0.001",
        [[f"{8 - i / 100:.2f}", f"{(i + 1) / 10:.3f}"] for i in range(12)],
        [[f"{8.01 + i / 100:.2f}", f"{(i + 2) / 1000:.3f}"] for i in range(12)],
    ),
    ("coarse USD market", "0.001", "0.001", [["0.595", "10"]], [["0.6", "0.001"]]),
    ("large values", "0.01", "0.001", [["123456.78", "9876543.21"]], [["999999.99", "1"]]),
]


def to_int(text: str, step: str) -> int:
    value = Decimal(text) / Decimal(step)
    assert value == value.to_integral_value()
    return int(value)


def main() -> None:
    cases = []
    for name, tick, lot, bids, asks in CASES:
        payload = b""
        for price, quantity in bids[:10] + asks[:10]:
            payload += struct.pack(">Q", to_int(price, tick)) + struct.pack(
                ">Q", to_int(quantity, lot)
            )
        cases.append(
            {
                "name": name,
                "tick_size": tick,
                "lot_size": lot,
                "bids": bids,
                "asks": asks,
                "bytes_hex": payload.hex(),
                "checksum": zlib.crc32(payload),
            }
        )
    path = Path(__file__).parent / "fixtures" / "checksums.json"
    path.write_text(
        json.dumps({"format": "see exchange/marketdata/checksum.py", "cases": cases}, indent=1)
        + "\n"
    )


if __name__ == "__main__":
    main()
