"""Benchmark the matching engine, and write the golden fixture.

Usage::

    python -m exchange.engine.bench [--count N] [--seed S] [--no-memory] [--jsonl FILE]
    python -m exchange.engine.bench --golden DIR      # regenerate tests/engine/fixtures

Passes, each on a fresh book over the same pre-generated stream (generation is not timed):

1. throughput through ``Book.new`` / ``Book.cancel`` with every event tuple built, no JSON;
2. throughput through ``Book.apply(dict)`` (the replay path minus JSON);
3. latency: ``perf_counter_ns`` around every single command, reported as percentiles;
4. memory: the peak traced by ``tracemalloc`` while the book runs (skipped with ``--no-memory``),
   plus the process's peak RSS (which includes the generated stream).

``--jsonl FILE`` also writes the stream as JSON lines, for timing the replay tool.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import platform
import resource
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exchange.engine.book import Book
from exchange.engine.replay import replay_lines
from exchange.engine.streams import generate

GOLDEN_COUNT = 50_000
GOLDEN_SEED = 20_260_401
GOLDEN_NOISE = 0.03
GOLDEN_COMMANDS = "golden_commands.jsonl.gz"
GOLDEN_EVENTS = "golden_events.jsonl.gz"
_GARBAGE_LINES = (b"not json", b"[1,2,3]", b'{"op":"new"', b"42", b'"new"', b"{}", b"\xff\xfe")


def command_line(command: dict[str, Any]) -> bytes:
    return json.dumps(command, separators=(",", ":")).encode("ascii")


def golden_lines() -> list[bytes]:
    """The golden stream: generated commands plus snapshots and unparseable lines."""
    lines: list[bytes] = []
    for index, command in enumerate(generate(GOLDEN_COUNT, GOLDEN_SEED, noise=GOLDEN_NOISE)):
        lines.append(command_line(command))
        if index % 5_000 == 4_999:
            lines.append(b'{"op":"snapshot"}')
        if index % 7_919 == 7_918:
            lines.append(_GARBAGE_LINES[(index // 7_919) % len(_GARBAGE_LINES)])
    return lines


def write_golden(directory: Path) -> None:
    lines = golden_lines()
    output = "".join(replay_lines(lines)).encode("ascii")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GOLDEN_COMMANDS).write_bytes(gzip.compress(b"\n".join(lines) + b"\n", 9, mtime=0))
    (directory / GOLDEN_EVENTS).write_bytes(gzip.compress(output, 9, mtime=0))
    event_count = output.count(b"\n")
    print(f"wrote {len(lines):,} commands and {event_count:,} events to {directory}")


def _calls(commands: list[dict[str, Any]]) -> list[Any]:
    """Commands as argument tuples for ``Book.new`` or bare ids for ``Book.cancel``."""
    calls: list[Any] = []
    for command in commands:
        if command["op"] == "cancel":
            calls.append(command["id"])
        else:
            calls.append(
                (
                    command["id"],
                    command["account"],
                    command["side"],
                    command["type"],
                    command.get("price"),
                    command["qty"],
                    command.get("tif"),
                    command.get("post_only", False),
                    command.get("stp", "cancel_oldest"),
                )
            )
    return calls


def _run_direct(calls: list[Any]) -> tuple[float, int]:
    book = Book()
    new = book.new
    cancel = book.cancel
    event_count = 0
    started = time.perf_counter()
    for call in calls:
        if call.__class__ is tuple:
            event_count += len(new(*call))
        else:
            event_count += len(cancel(call))
    return time.perf_counter() - started, event_count


def _run_apply(commands: list[dict[str, Any]]) -> float:
    book = Book()
    apply = book.apply
    started = time.perf_counter()
    for command in commands:
        apply(command)
    return time.perf_counter() - started


def _run_latency(calls: list[Any]) -> tuple[array[int], int]:
    book = Book()
    new = book.new
    cancel = book.cancel
    clock = time.perf_counter_ns
    samples = array("q", bytes(8 * len(calls)))
    trades = 0
    for index, call in enumerate(calls):
        if call.__class__ is tuple:
            started = clock()
            events = new(*call)
            samples[index] = clock() - started
        else:
            started = clock()
            events = cancel(call)
            samples[index] = clock() - started
        for event in events:
            if event[0] == "trade":
                trades += 1
    return samples, trades


def _run_memory(calls: list[Any]) -> tuple[int, int]:
    tracemalloc.start()
    book = Book()
    for call in calls:
        if call.__class__ is tuple:
            book.new(*call)
        else:
            book.cancel(call)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current, peak


def _percentile(sorted_samples: list[int], fraction: float) -> float:
    index = min(len(sorted_samples) - 1, int(fraction * len(sorted_samples)))
    return sorted_samples[index] / 1000


def _timed(label: str, function: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = function()
    print(f"{label}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return result


def bench(count: int, seed: int, *, memory: bool, jsonl: Path | None) -> None:
    print(f"python {platform.python_version()} on {platform.machine()}, {count:,} commands")
    commands = _timed("generate", lambda: generate(count, seed))
    if jsonl is not None:
        with jsonl.open("wb") as sink:
            for command in commands:
                sink.write(command_line(command) + b"\n")
    calls = _calls(commands)
    gc.collect()
    gc.disable()  # the engine creates no reference cycles; keep collector pauses out of timing
    try:
        seconds, event_count = _run_direct(calls)
        print(
            f"direct new/cancel: {count / seconds:,.0f} commands/s "
            f"({seconds:.3f} s, {event_count:,} events)"
        )
        seconds = _run_apply(commands)
        print(f"apply(dict):       {count / seconds:,.0f} commands/s ({seconds:.3f} s)")
        samples, trades = _run_latency(calls)
    finally:
        gc.enable()
    ordered = sorted(samples)
    print(
        f"latency per command (us): p50 {_percentile(ordered, 0.5):.2f}  "
        f"p99 {_percentile(ordered, 0.99):.2f}  p99.9 {_percentile(ordered, 0.999):.2f}  "
        f"max {ordered[-1] / 1000:.1f}"
    )
    print(f"trades: {trades:,}")
    if memory:
        current, peak = _run_memory(calls)
        print(
            f"engine memory (tracemalloc): end {current / 2**20:.1f} MiB, "
            f"peak {peak / 2**20:.1f} MiB"
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS (includes the generated stream): {peak_rss:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange.engine.bench", description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--jsonl", type=Path, help="also write the stream as JSON lines here")
    parser.add_argument("--golden", type=Path, metavar="DIR", help="write the golden fixture")
    arguments = parser.parse_args(argv)
    if arguments.golden is not None:
        write_golden(arguments.golden)
        return 0
    bench(arguments.count, arguments.seed, memory=not arguments.no_memory, jsonl=arguments.jsonl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
