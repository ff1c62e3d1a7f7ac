"""The replay tool, the golden stream, snapshots and restore."""

from __future__ import annotations

import gzip
import hashlib
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exchange.engine import Book, SnapshotError, apply_all, bench, event_json, replay, snapshot
from exchange.engine.bench import GOLDEN_COMMANDS, GOLDEN_EVENTS, golden_lines
from exchange.engine.streams import generate

FIXTURES = Path(__file__).parent / "fixtures"
REPOSITORY = Path(__file__).resolve().parents[2]


def golden_command_lines() -> list[bytes]:
    return gzip.decompress((FIXTURES / GOLDEN_COMMANDS).read_bytes()).splitlines()


def golden_events() -> bytes:
    return gzip.decompress((FIXTURES / GOLDEN_EVENTS).read_bytes())


# -- golden stream ---------------------------------------------------------------------------


def test_golden_stream_replays_byte_identical():
    output = "".join(replay.replay_lines(golden_command_lines())).encode("ascii")

    assert output == golden_events(), (
        "engine output drifted from the golden fixture; if the change is intended, regenerate "
        "with: python -m exchange.engine.bench --golden tests/engine/fixtures"
    )


def test_golden_stream_replays_identically_without_orjson(monkeypatch):
    monkeypatch.setattr(replay, "_make_loads", lambda: replay._stdlib_loads)

    output = "".join(replay.replay_lines(golden_command_lines())).encode("ascii")

    assert output == golden_events()


def test_golden_fixture_matches_the_generator():
    assert golden_lines() == golden_command_lines()


def test_replay_twice_gives_the_same_bytes():
    lines = golden_command_lines()[:5_000]

    assert "".join(replay.replay_lines(lines)) == "".join(replay.replay_lines(lines))


# -- the command-line tool -------------------------------------------------------------------

CLI_INPUT = b"""{"op":"new","id":1,"account":"a","side":"sell","type":"limit","price":100,"qty":5}
this is not json

{"op":"new","id":2,"account":"b","side":"buy","type":"market","qty":7}
{"op":"cancel","id":1}
{"op":"new","id":18446744073709551616,"account":"b","side":"buy","type":"limit","price":9,"qty":1}
{"op":"snapshot"}
"""

CLI_OUTPUT = b"""{"ev":"rest","id":1,"price":100,"qty":5}
{"ev":"reject","id":null,"reason":"invalid"}
{"ev":"trade","taker":2,"maker":1,"price":100,"qty":5,"taker_side":"buy"}
{"ev":"filled","id":1}
{"ev":"cancel","id":2,"qty":2,"reason":"ioc"}
{"ev":"reject","id":1,"reason":"unknown_order"}
{"ev":"rest","id":18446744073709551616,"price":9,"qty":1}
{"ev":"snapshot","bids":[[18446744073709551616,9,1]],"asks":[]}
"""


def run_replay(*arguments: str, stdin: bytes = b"") -> bytes:
    completed = subprocess.run(
        [sys.executable, "-m", "exchange.engine.replay", *arguments],
        input=stdin,
        capture_output=True,
        cwd=REPOSITORY,
        check=True,
    )
    return completed.stdout


def test_replay_reads_stdin_and_prints_events():
    assert run_replay(stdin=CLI_INPUT) == CLI_OUTPUT


def test_replay_reads_a_file(tmp_path):
    commands = tmp_path / "commands.jsonl"
    commands.write_bytes(CLI_INPUT)

    assert run_replay(str(commands)) == CLI_OUTPUT


def test_replay_bench_reports_throughput(tmp_path):
    commands = tmp_path / "commands.jsonl"
    commands.write_bytes(CLI_INPUT)

    assert b"commands/s" in run_replay("--bench", str(commands))


def test_event_json_is_compact_with_keys_in_the_documented_order():
    assert event_json(("trade", 1, 2, 3, 4, "sell")) == (
        '{"ev":"trade","taker":1,"maker":2,"price":3,"qty":4,"taker_side":"sell"}'
    )
    assert event_json(("filled", 5)) == '{"ev":"filled","id":5}'
    assert event_json(("rest", 5, 6, 7)) == '{"ev":"rest","id":5,"price":6,"qty":7}'
    assert event_json(("cancel", 5, 7, "fok")) == '{"ev":"cancel","id":5,"qty":7,"reason":"fok"}'
    assert event_json(("reject", None, "invalid")) == (
        '{"ev":"reject","id":null,"reason":"invalid"}'
    )
    assert event_json(("snapshot", [(1, 2, 3), (4, 5, 6)], [])) == (
        '{"ev":"snapshot","bids":[[1,2,3],[4,5,6]],"asks":[]}'
    )


# -- snapshot and restore --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_restoring_a_snapshot_taken_halfway_continues_identically(seed):
    commands = generate(6_000, seed, noise=0.05)
    half = len(commands) // 2
    uninterrupted = Book()
    apply_all(uninterrupted, commands[:half])
    expected_tail = apply_all(uninterrupted, commands[half:])
    interrupted = Book()
    apply_all(interrupted, commands[:half])

    restored = Book.load(interrupted.dump())
    tail = apply_all(restored, commands[half:])

    assert tail == expected_tail
    assert restored.state_hash() == uninterrupted.state_hash()
    assert restored.dump() == uninterrupted.dump()


def test_snapshot_keeps_used_ids():
    book = Book()
    apply_all(book, generate(500, 3))

    restored = Book.load(book.dump())

    assert book.apply(
        {"op": "new", "id": 1, "account": "z", "side": "buy", "type": "market", "qty": 1}
    ) == [("reject", 1, "duplicate_id")]
    assert restored.apply(
        {"op": "new", "id": 1, "account": "z", "side": "buy", "type": "market", "qty": 1}
    ) == [("reject", 1, "duplicate_id")]


def test_snapshot_blob_has_a_versioned_header_and_a_canonical_payload():
    book = Book()
    book.new(3, "a", "buy", "limit", 99, 5)
    book.new(4, "b", "sell", "limit", 101, 6)
    book.new(5, "c", "sell", "market", None, 1)
    book.new(7, "a", "buy", "limit", 99, 2)

    blob = book.dump()

    assert blob[:6] == b"TXEB\x00\x01"
    payload = snapshot.canonical_payload(snapshot.decode(blob))
    assert payload == (
        b'{"bids":[[3,"a",99,4],[7,"a",99,2]],"asks":[[4,"b",101,6]],"used":[[3,5],[7,7]]}'
    )
    assert book.state_hash() == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"TXE",
        b"XXXX\x00\x01" + b"x",
        b"TXEB\x00\x02" + b"x",
        b"TXEB\x00\x01not zlib",
    ],
)
def test_load_refuses_what_is_not_a_snapshot(blob):
    with pytest.raises(SnapshotError):
        Book.load(blob)


@pytest.mark.parametrize(
    "document",
    [
        {"bids": [], "asks": []},
        {"bids": [[1, "a", 10, 0]], "asks": [], "used": [[1, 1]]},
        {"bids": [[1, "a", 10, 1]], "asks": [], "used": []},
        {"bids": [[1, "a", 10, 1]], "asks": [[2, "a", 10, 1]], "used": [[1, 2]]},
        {"bids": [[1, "a", 10, 1]], "asks": [[1, "a", 11, 1]], "used": [[1, 1]]},
        {"bids": [], "asks": [], "used": [[5, 1]]},
    ],
)
def test_load_refuses_an_inconsistent_state(document):
    import json
    import zlib

    blob = b"TXEB\x00\x01" + zlib.compress(json.dumps(document).encode())

    with pytest.raises(SnapshotError):
        Book.load(blob)


# -- rejected commands change nothing --------------------------------------------------------

BAD_VALUES: tuple[Any, ...] = (None, 0, -7, True, False, 2.5, "", "x", [], {})


def rejected_commands(count: int, rng: random.Random, used_ids: list[int]) -> list[Any]:
    template = {
        "op": "new",
        "id": 10_000_000,
        "account": "acct001",
        "side": "buy",
        "type": "limit",
        "price": 10_000,
        "qty": 10,
    }
    commands: list[Any] = []
    for _ in range(count):
        roll = rng.random()
        command: Any = dict(template)
        if roll < 0.1:
            command["id"] = rng.choice(used_ids)  # duplicate
        elif roll < 0.2:
            command = {"op": "cancel", "id": rng.choice((10_000_001, -1, 0))}
        elif roll < 0.25:
            command = rng.choice((None, [], "new", 1, {"op": "snapshot", "x": 1}))
        elif roll < 0.4:
            del command[rng.choice(("id", "account", "side", "type", "price", "qty"))]
        else:
            field = rng.choice([*sorted(template), "tif", "post_only", "stp", "extra"])
            command[field] = rng.choice(BAD_VALUES)
            # The only values in BAD_VALUES that are valid for some field:
            if field == "post_only" and type(command[field]) is bool:
                command[field] = 1
            if field == "account" and command[field] == "x":
                command[field] = ""
            if field == "id" and type(command[field]) is int:
                command[field] = str(command[field])  # any int is a valid id
        commands.append(command)
    return commands


def test_ten_thousand_rejected_commands_leave_the_state_unchanged():
    book = Book()
    stream = generate(3_000, 11)
    apply_all(book, stream)
    used_ids = [command["id"] for command in stream if command["op"] == "new"]
    before = book.state_hash()

    for command in rejected_commands(10_000, random.Random(5), used_ids):
        events = book.apply(command)
        assert len(events) == 1, command
        assert events[0][0] == "reject", command

    assert book.state_hash() == before


EDGE_LINES = [
    b'{"op":"new","id":1,"account":"a","side":"buy","type":"limit","price":5,'
    b'"qty":18446744073709551616}',
    b'{"op":"new","id":2,"account":"a","side":"sell","type":"limit",'
    b'"price":99999999999999999999999,"qty":1}',
    b'{"op":"new","id":3,"account":"a","side":"buy","type":"market","price":1e400,"qty":1}',
    b'{"op":"cancel","id":-18446744073709551616}',
    b'{"op":"cancel","id":NaN}',
    b'{"op":"new","id":4,"account":"\\ud800","side":"buy","type":"limit","price":1,"qty":1}',
    b'{"op":"snapshot","id":18446744073709551617}',
    b"18446744073709551616",
    b'{"op":"snapshot"}',
]


def test_edge_lines_replay_the_same_with_and_without_orjson(monkeypatch):
    with_orjson = "".join(replay.replay_lines(EDGE_LINES))
    monkeypatch.setattr(replay, "_make_loads", lambda: replay._stdlib_loads)

    without_orjson = "".join(replay.replay_lines(EDGE_LINES))

    assert with_orjson == without_orjson
    assert (
        with_orjson.splitlines()[0] == '{"ev":"rest","id":1,"price":5,"qty":18446744073709551616}'
    )
    assert with_orjson.count("reject") == 4


# -- the benchmark script --------------------------------------------------------------------


def test_bench_runs_and_reports_every_figure(capsys):
    bench.main(["--count", "3000", "--seed", "2"])

    report = capsys.readouterr().out
    for figure in ("direct new/cancel", "apply(dict)", "p99.9", "trades", "tracemalloc", "RSS"):
        assert figure in report


def test_bench_golden_mode_rewrites_the_committed_fixture(tmp_path):
    bench.main(["--golden", str(tmp_path)])

    # Compare contents, not gzip bytes, which may differ between zlib builds.
    for name in (GOLDEN_EVENTS, GOLDEN_COMMANDS):
        written = gzip.decompress((tmp_path / name).read_bytes())
        assert written == gzip.decompress((FIXTURES / name).read_bytes())
