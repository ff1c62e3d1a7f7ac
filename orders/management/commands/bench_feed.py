"""Websocket feed benchmark (not a test): N clients subscribed to one market's trades and book on
a served exchange (uvicorn + Redis channel layer + a separate runner), while a driver makes
trades at a fixed rate. Reports delivery latency from trade to client receipt and messages/s.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench REDIS_URL=redis://127.0.0.1:6379/5 \\
        python manage.py bench_feed --clients 1000 --rate 100 --seconds 20

Latency is measured from the trade's timestamp (taken by the runner just before its batch
commits) to the moment the client has parsed the message, on the same machine's clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

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

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError("Set REDIS_URL: the benchmark measures the Redis channel layer.")
        settings.ENGINE_RUNNER = "external"
        market = bench_market()
        seller, buyer = bench_users(2, market)
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
             "--ws-max-queue", "1024"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        engine = subprocess.Popen(
            [sys.executable, "manage.py", "run_engine", "--market", SYMBOL],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            result = asyncio.run(self.measure(port, options, market, seller, buyer))
        finally:
            for process in (server, engine):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        self.stdout.write(result)

    async def measure(self, port: int, options: dict[str, Any], market, seller, buyer) -> str:
        from websockets.asyncio.client import connect

        latencies: list[float] = []
        counts = {"messages": 0, "trades": 0}
        stop = asyncio.Event()

        async def client() -> None:
            async with connect(
                f"ws://127.0.0.1:{port}/ws/v1", origin=f"http://127.0.0.1:{port}",
                max_queue=None, open_timeout=60,
            ) as ws:  # fmt: skip
                await ws.send(
                    json.dumps(
                        {"op": "subscribe", "channels": ["trades", "book"], "markets": [SYMBOL]}
                    )
                )
                ready.append(1)
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                    except TimeoutError:
                        continue
                    counts["messages"] += 1
                    message = json.loads(raw)
                    if message.get("channel") == "trades" and measuring.is_set():
                        now = time.time() * 1000
                        for trade in message["trades"]:
                            latencies.append(now - trade["time"])
                            counts["trades"] += 1

        ready: list[int] = []
        measuring = asyncio.Event()
        tasks = []
        for index in range(options["clients"]):
            tasks.append(asyncio.create_task(client()))
            if index % 50 == 49:
                await asyncio.sleep(0.05)
        while len(ready) < options["clients"]:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)

        done = threading.Event()
        placed = [0]

        def driver() -> None:
            interval = 1.0 / options["rate"]
            ask = order_request_parse(market=market, side="sell", price="8.00", quantity="1000")
            order_place(user=seller, request=ask)
            next_at = time.perf_counter()
            end = next_at + options["seconds"]
            while time.perf_counter() < end:
                bid = order_request_parse(
                    market=market, side="buy", price="8.00", quantity="0.01", time_in_force="IOC"
                )
                order_place(user=buyer, request=bid)
                placed[0] += 1
                if placed[0] % 50_000 == 0:
                    order_place(user=seller, request=ask)
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            connection.close()
            done.set()

        measuring.set()
        started = time.perf_counter()
        thread = threading.Thread(target=driver)
        thread.start()
        while not done.is_set():
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        thread.join()
        if not latencies:
            return "no trades received"
        expected = placed[0] * options["clients"]
        return (
            f"feed: {options['clients']} clients, {placed[0]} trades in {options['seconds']:.0f}s "
            f"({placed[0] / options['seconds']:.0f}/s); {counts['trades']:,} of {expected:,} trade "
            f"deliveries received; latency p50 {statistics.median(latencies):.0f} ms, "
            f"p99 {percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms; "
            f"{counts['messages'] / elapsed:,.0f} messages/s delivered"
        )
