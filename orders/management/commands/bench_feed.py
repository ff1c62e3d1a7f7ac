"""Websocket feed benchmark (not a test): N clients subscribed to one market's trades and book on
a served exchange (uvicorn + Redis channel layer + a separate runner), while a driver makes
trades at a fixed rate. Reports delivery latency from trade to client receipt and messages/s.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench REDIS_URL=redis://127.0.0.1:6379/5 \\
        python manage.py bench_feed --clients 1000 --rate 100 --seconds 20

Latency is measured from the trade's timestamp (taken by the runner just before its batch
commits) to the moment the client process read the frame, on the same machine's clock.

The clients share the CPU with the server, so they are made cheap: by default (``--client raw``)
each is a bare asyncio protocol on uvloop that does the websocket handshake, answers pings and
splits frames itself, and parses only ``trades`` frames as JSON (``--client websockets`` uses the
websockets library instead, without compression, for comparison). They run in
``--client-processes`` child processes, away from the order driver, whose ``--drivers`` threads
place the orders (more threads than two only add CPU contention on a 2-core machine).
"""

from __future__ import annotations

import array
import asyncio
import base64
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from orders.management.commands.bench_trading import SYMBOL, bench_market, bench_users, percentile
from orders.services import order_place, order_request_parse

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Command(BaseCommand):
    help = "Benchmark websocket delivery latency with many clients (needs REDIS_URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=1000)
        parser.add_argument("--rate", type=float, default=100.0, help="trades per second")
        parser.add_argument("--seconds", type=float, default=20.0)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--client", choices=["raw", "websockets"], default="raw")
        parser.add_argument("--client-processes", type=int, default=1)
        parser.add_argument(
            "--drivers", type=int, default=2,
            help="threads placing the orders (one cannot commit 100 orders/s here)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError("Set REDIS_URL: the benchmark measures the Redis channel layer.")
        settings.ENGINE_RUNNER = "external"
        market = bench_market()
        seller, *buyers = bench_users(1 + max(1, options["drivers"]), market)
        port = free_port()
        db = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}"
            f":{db['PORT'] or 5432}/{db['NAME']}",
            "ENGINE_RUNNER": "external",
            "DEBUG": "false",
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret-key-0123456789abcdef"),
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "exchange.asgi:application", "--port", str(port),
             "--workers", str(options["workers"]), "--log-level", "warning", "--no-access-log",
             "--ws-max-queue", "1024", "--ws-per-message-deflate", "false"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        engine = subprocess.Popen(
            [sys.executable, "manage.py", "run_engine", "--market", SYMBOL],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(100):
                try:
                    healthz = f"http://127.0.0.1:{port}/healthz"  # loopback
                    urllib.request.urlopen(healthz, timeout=1)  # nosec B310
                    break
                except OSError:
                    time.sleep(0.2)
            result = self.measure(port, options, market, seller, buyers)
        finally:
            for process in (server, engine):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        self.stdout.write(result)

    def measure(self, port: int, options: dict[str, Any], market, seller, buyers) -> str:
        processes = max(1, options["client_processes"])
        context = multiprocessing.get_context("fork")
        connection.close()  # the children must not share the driver's database connection
        children = []
        for index in range(processes):
            count = options["clients"] // processes + (index < options["clients"] % processes)
            parent_end, child_end = context.Pipe()
            child = context.Process(
                target=clients_run, args=(port, count, options["client"], child_end), daemon=True
            )
            child.start()
            children.append((child, parent_end))
        for _, pipe in children:
            if not pipe.poll(120):
                raise CommandError("the clients did not connect within 120 s")
            pipe.recv()  # all connected and subscribed
        time.sleep(1)

        for _, pipe in children:
            pipe.send("measure")
        started = time.perf_counter()
        placed = drive(market, seller, buyers, options["rate"], options["seconds"])
        time.sleep(2)
        elapsed = time.perf_counter() - started
        for _, pipe in children:
            pipe.send("stop")
        latencies: list[float] = []
        messages = trades = closed = 0
        for child, pipe in children:
            report = pipe.recv()
            latencies.extend(array.array("d", report["latencies"]))
            messages += report["messages"]
            trades += report["trades"]
            closed += report["closed"]
            child.join(timeout=30)
        if not latencies:
            return "no trades received"
        expected = placed * options["clients"]
        return (
            f"feed: {options['clients']} clients ({options['client']}, {processes} process(es)), "
            f"{placed} trades in {options['seconds']:.0f}s "
            f"({placed / options['seconds']:.0f}/s); {trades:,} of {expected:,} trade "
            f"deliveries received; latency p50 {statistics.median(latencies):.0f} ms, "
            f"p99 {percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms; "
            f"{messages / elapsed:,.0f} messages/s delivered; {closed} connection(s) closed by "
            f"the server"
        )


def drive(market, seller, buyers, rate: float, seconds: float) -> int:
    """One crossing IOC order (one trade) per 1/rate seconds, spread over one thread per buyer;
    returns how many were placed."""
    ask = order_request_parse(market=market, side="sell", price="8.00", quantity="1000")
    order_place(user=seller, request=ask)
    connection.close()
    placed = [0] * len(buyers)
    interval = len(buyers) / rate
    started = time.perf_counter()

    def driver(index: int) -> None:
        next_at = started + index / rate
        end = started + seconds
        while next_at < end:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            bid = order_request_parse(
                market=market, side="buy", price="8.00", quantity="0.01", time_in_force="IOC"
            )
            order_place(user=buyers[index], request=bid)
            placed[index] += 1
            if index == 0 and placed[0] % 20_000 == 0:
                order_place(user=seller, request=ask)
            next_at += interval
        connection.close()

    threads = [threading.Thread(target=driver, args=(index,)) for index in range(len(buyers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(placed)


# -- the clients (child processes) ---------------------------------------------------------------
SUBSCRIBE = orjson.dumps({"op": "subscribe", "channels": ["trades", "book"], "markets": [SYMBOL]})
TRADES_PREFIX = b'{"channel":"trades"'


@dataclass
class Stats:
    measuring: bool = False
    ready: int = 0
    messages: int = 0
    trades: int = 0
    closed: int = 0
    latencies: array.array = field(default_factory=lambda: array.array("d"))

    def text(self, data: bytes | bytearray | memoryview, now_ms: float) -> None:
        if not self.measuring:
            return
        self.messages += 1
        if data[: len(TRADES_PREFIX)] == TRADES_PREFIX:
            for trade in orjson.loads(data)["trades"]:
                self.latencies.append(now_ms - trade["time"])
                self.trades += 1


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (clients must mask; payloads here are small)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    else:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    return header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


class RawClient(asyncio.Protocol):
    """A websocket client without a library: no task or future per message."""

    def __init__(self, port: int, stats: Stats) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET /ws/v1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://127.0.0.1:{port}\r\n\r\n"
        ).encode()
        self.stats = stats
        self.buffer = bytearray()
        self.upgraded = False
        self.subscribed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.transport.close()
                return
            del buffer[: end + 4]
            self.upgraded = True
            self.transport.write(client_frame(0x1, SUBSCRIBE))
        now_ms = time.time() * 1000
        view = memoryview(buffer)
        position, size = 0, len(buffer)
        while size - position >= 2:
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(view[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(view[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            opcode = buffer[position] & 0x0F
            if opcode == 0x1:
                if self.subscribed:
                    self.stats.text(view[start:end], now_ms)
                else:  # the first frame is the subscription's acknowledgement
                    self.subscribed = True
                    self.stats.ready += 1
            elif opcode == 0x9:
                self.transport.write(client_frame(0xA, bytes(view[start:end])))
            elif opcode == 0x8:
                self.stats.closed += 1
                self.transport.close()
            position = end
        view.release()
        del buffer[:position]


async def websockets_client(port: int, stats: Stats, stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    async with connect(
        f"ws://127.0.0.1:{port}/ws/v1", origin=f"http://127.0.0.1:{port}",
        max_queue=None, open_timeout=60, compression=None,
    ) as ws:  # fmt: skip
        await ws.send(SUBSCRIBE.decode())
        await ws.recv()
        stats.ready += 1
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(decode=False), timeout=0.5)
            except TimeoutError:
                continue
            stats.text(raw, time.time() * 1000)
    if ws.close_code not in (None, 1000):
        stats.closed += 1


def clients_run(port: int, count: int, kind: str, pipe: Connection) -> None:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(clients_main(port, count, kind, pipe))


async def clients_main(port: int, count: int, kind: str, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    stop = asyncio.Event()
    transports = []
    tasks = []
    for index in range(count):
        if kind == "raw":
            transport, _ = await loop.create_connection(
                lambda: RawClient(port, stats), "127.0.0.1", port
            )
            transports.append(transport)
        else:
            tasks.append(asyncio.create_task(websockets_client(port, stats, stop)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)
    while stats.ready < count:
        await asyncio.sleep(0.1)
    pipe.send("ready")

    commands: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
    while await commands.get() != "stop":
        stats.measuring = True
    stats.measuring = False
    loop.remove_reader(pipe.fileno())
    os.set_blocking(pipe.fileno(), True)  # add_reader made it non-blocking
    pipe.send(
        {"latencies": stats.latencies.tobytes(), "messages": stats.messages,
         "trades": stats.trades, "closed": stats.closed}
    )  # fmt: skip
    stop.set()
    for transport in transports:
        transport.close()
    await asyncio.gather(*tasks, return_exceptions=True)
