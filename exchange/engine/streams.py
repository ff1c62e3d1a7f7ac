"""Seeded synthetic command streams for the benchmark, the golden fixture and tests.

The stream is a pure function of ``(count, seed, noise)``: ``random.Random(seed)`` and a shadow
:class:`Book`, used only to pick cancel targets among orders that really rest.

Mix: 70% limit orders around a random-walking mid (about half priced to cross the spread),
20% cancels of resting orders, 10% market orders. With ``noise > 0`` that fraction of commands
is replaced by rejected ones (malformed fields, reused ids, cancels of unknown ids).
"""

from __future__ import annotations

import random
from typing import Any

from exchange.engine.book import Book

START_MID = 10_000
ACCOUNTS = tuple(f"acct{number:03d}" for number in range(64))
_STPS = ("cancel_oldest",) * 8 + ("cancel_newest", "cancel_both")


def _limit(rng: random.Random, order_id: int, mid: int) -> dict[str, Any]:
    side = "buy" if rng.random() < 0.5 else "sell"
    crossing = rng.random() < 0.5
    offset = rng.randint(1, 12) if crossing else rng.randint(0, 20)
    if side == "buy":
        price = mid + offset if crossing else mid - offset
    else:
        price = mid - offset if crossing else mid + offset
    command: dict[str, Any] = {
        "op": "new",
        "id": order_id,
        "account": rng.choice(ACCOUNTS),
        "side": side,
        "type": "limit",
        "price": max(price, 1),
        # Resting liquidity comes in larger clips than aggressive flow, so the book stays deep.
        "qty": rng.randint(1, 100) if crossing else rng.randint(1, 400),
    }
    roll = rng.random()
    if roll < 0.08:
        command["tif"] = "IOC"
    elif roll < 0.13:
        command["tif"] = "FOK"
    elif roll < 0.18:
        command["post_only"] = True
    if rng.random() < 0.3:
        command["stp"] = rng.choice(_STPS)
    return command


def _market(rng: random.Random, order_id: int) -> dict[str, Any]:
    command: dict[str, Any] = {
        "op": "new",
        "id": order_id,
        "account": rng.choice(ACCOUNTS),
        "side": "buy" if rng.random() < 0.5 else "sell",
        "type": "market",
        "qty": rng.randint(1, 150),
    }
    if rng.random() < 0.1:
        command["tif"] = "FOK"
    if rng.random() < 0.3:
        command["stp"] = rng.choice(_STPS)
    return command


_INVALID_VARIANTS: tuple[dict[str, Any], ...] = (
    {"qty": 0},
    {"qty": -5},
    {"qty": True},
    {"price": 0},
    {"price": 1.5},
    {"price": "100"},
    {"side": "hold"},
    {"type": "stop"},
    {"tif": "GTD"},
    {"tif": None},
    {"account": ""},
    {"account": 7},
    {"post_only": 1},
    {"stp": "cancel_all"},
    {"extra": 1},
    {"type": "market", "tif": "GTC"},
    {"type": "market", "post_only": True},
    {"tif": "IOC", "post_only": True},
)


def _noise(rng: random.Random, next_id: int, used: list[int]) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.3 and used:
        command = _limit(rng, rng.choice(used), START_MID)
        return command
    if roll < 0.5:
        return {"op": "cancel", "id": rng.choice((-1, next_id + 10_000_000, 0))}
    if roll < 0.55:
        return {"op": "cancel", "id": rng.choice(("1", None, 2.0, True))}
    command = _limit(rng, next_id, START_MID)
    command.update(rng.choice(_INVALID_VARIANTS))
    if rng.random() < 0.1:
        del command[rng.choice(("id", "account", "side", "type", "qty", "price"))]
    return command


def generate(count: int, seed: int, *, noise: float = 0.0) -> list[dict[str, Any]]:
    """``count`` commands as replay-format dicts."""
    rng = random.Random(seed)
    shadow = Book()
    mid = START_MID
    next_id = 1
    cancel_candidates: list[int] = []
    used: list[int] = []
    commands: list[dict[str, Any]] = []
    for _ in range(count):
        mid = max(mid + rng.choice((-1, 0, 0, 1)), 50)
        roll = rng.random()
        if noise and rng.random() < noise:
            command = _noise(rng, next_id, used)
        elif roll < 0.70:
            command = _limit(rng, next_id, mid)
            next_id += 1
            if command.get("tif") is None:
                cancel_candidates.append(command["id"])
        elif roll < 0.90:
            command = {"op": "cancel", "id": _cancel_target(rng, shadow, cancel_candidates)}
        else:
            command = _market(rng, next_id)
            next_id += 1
        events = shadow.apply(command)
        if command["op"] == "new" and events[0][0] != "reject":
            used.append(command["id"])
        commands.append(command)
    return commands


def _cancel_target(rng: random.Random, shadow: Book, candidates: list[int]) -> int:
    while candidates:
        index = rng.randrange(len(candidates))
        order_id = candidates[index]
        candidates[index] = candidates[-1]
        candidates.pop()
        if shadow.resting(order_id) is not None:
            return order_id
    return 0
