"""Replay commands from JSON lines and print the engine's events as JSON lines.

Usage::

    python -m exchange.engine.replay [FILE]          # stdin when FILE is omitted or "-"
    python -m exchange.engine.replay --bench FILE    # time it; events are formatted, not printed

Every non-blank input line is one command ``{"op": "new"|"cancel"|"snapshot", ...}``; a line
that is not a JSON object of a known shape is rejected ``invalid`` and the run goes on. Blank
lines are skipped. Input is parsed with orjson when it is importable, falling back to the
standard library for anything orjson refuses or reads differently (integers beyond 64 bits, which
orjson turns into floats), so the output never depends on whether orjson is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from exchange.engine.book import Book
from exchange.engine.events import FORMATTERS

_INVALID_LINE: Any = object()


def _stdlib_loads(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return _INVALID_LINE


def _make_loads() -> Callable[[bytes], Any]:
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is installed in the project environment
        return _stdlib_loads
    orjson_loads = orjson.loads
    decode_error = orjson.JSONDecodeError

    def loads(line: bytes) -> Any:
        try:
            command = orjson_loads(line)
        except decode_error:
            return _stdlib_loads(line)
        # orjson turns integers beyond 64 bits into floats where the stdlib keeps them exact.
        # Only these three fields can be valid ints; a float anywhere else is invalid either way.
        if command.__class__ is dict:
            get = command.get
            if (
                get("id").__class__ is float
                or get("qty").__class__ is float
                or get("price").__class__ is float
            ):
                return _stdlib_loads(line)
        return command

    return loads


def replay_lines(lines: Iterable[bytes], book: Book | None = None) -> Iterator[str]:
    """Yield the output text (JSON lines, newline-terminated) for each input line."""
    book = Book() if book is None else book
    loads = _make_loads()
    apply = book.apply
    formatters = FORMATTERS
    invalid_command = {"op": None}
    for line in lines:
        if not line.strip():
            continue
        command = loads(line)
        if command is _INVALID_LINE:
            command = invalid_command
        events = apply(command)
        if len(events) == 1:
            event = events[0]
            yield formatters[event[0]](event) + "\n"
        else:
            yield "".join([formatters[event[0]](event) + "\n" for event in events])


def run(source: IO[bytes], sink: IO[str]) -> None:
    write = sink.write
    buffer: list[str] = []
    for chunk in replay_lines(source):
        buffer.append(chunk)
        if len(buffer) >= 4096:
            write("".join(buffer))
            buffer.clear()
    write("".join(buffer))
    sink.flush()


def _bench(path: str) -> None:
    with open(path, "rb") as source:
        lines = source.readlines()
    started = time.perf_counter()
    output_bytes = 0
    for chunk in replay_lines(lines):
        output_bytes += len(chunk)
    elapsed = time.perf_counter() - started
    print(
        f"replay: {len(lines):,} commands in {elapsed:.3f} s = {len(lines) / elapsed:,.0f} "
        f"commands/s (JSON parse + match + JSON format; {output_bytes:,} output bytes)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange.engine.replay", description=__doc__)
    parser.add_argument("file", nargs="?", default="-", help="JSON lines of commands (- = stdin)")
    parser.add_argument("--bench", action="store_true", help="time the replay of FILE")
    arguments = parser.parse_args(argv)
    if arguments.bench:
        _bench(arguments.file)
        return 0
    if arguments.file == "-":
        run(sys.stdin.buffer, sys.stdout)
    else:
        with open(arguments.file, "rb") as source:
            run(source, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
