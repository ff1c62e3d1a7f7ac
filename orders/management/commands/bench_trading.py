"""Benchmarks of the trading path (not a test): the runner's durable throughput, and the REST API
with real HTTP clients against a served exchange. Run against PostgreSQL in a scratch database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench python manage.py migrate
    DATABASE_URL=... python manage.py bench_trading runner --orders 20000
    DATABASE_URL=... python manage.py bench_trading api --orders 9600 --clients 64

The data it creates (users bench-*, market BENCH-OUT-CNY) stays in that database.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from django.utils import timezone

from accounts.models import User
from accounts.services import api_key_create, user_create
from exchange.delivery.endpoints.crypto import secret_encrypt
from exchange.delivery.endpoints.demo import DEMO_MODEL_ID, DEMO_UPSTREAM_KEY, demo_upstream_root
from exchange.delivery.endpoints.models import Endpoint, HealthStatus
from exchange.ledger import services as ledger
from exchange.ledger.selectors import balance_get
from exchange.markets.currencies import TOKENS_PER_MTOK
from exchange.markets.models import Market
from exchange.markets.services import DEMO_MARKETS, market_create
from exchange.runner.core import BATCH_SIZE, MarketRunner
from orders.api import MAX_BATCH
from orders.capacity import capacity_list
from orders.models import OrderCommand
from orders.services import order_place, order_place_many, order_request_parse

SYMBOL = "BENCH-OUT-CNY"
ROOT = Path(__file__).resolve().parents[3]


def bench_market() -> Market:
    market = Market.objects.filter(symbol=SYMBOL).first()
    if market is None:
        spec = {**DEMO_MARKETS[0], "symbol": SYMBOL, "base": "BENCH-OUT"}
        market = market_create(**spec)
    return market


def bench_endpoint(user: User, market: Market) -> None:
    """A provider's asks need an endpoint in the market: the demo upstream's (registered
    without the check on save, as the demo data's; nothing here consumes the tokens)."""
    now = timezone.now()
    Endpoint.objects.get_or_create(
        provider=user,
        market=market,
        defaults={
            "base_url": f"{demo_upstream_root()}/p/ttft=200,tps=120/v1",
            "api_key_ciphertext": secret_encrypt(DEMO_UPSTREAM_KEY),
            "model_id": DEMO_MODEL_ID,
            "status": HealthStatus.HEALTHY,
            "last_checked_at": now,
            "last_success_at": now,
        },
    )


def bench_users(count: int, market: Market) -> list[User]:
    users = []
    for number in range(count):
        email = f"bench-{number}@example.com"
        user = User.objects.filter(email=email).first() or user_create(
            email=email,
            password=None,
            role="both",
            provider_grant_reason="Benchmark account (bench_trading).",
        )
        stamp = time.time_ns()
        if balance_get(user=user, asset="CNY").available < 10**6 * 10**8:
            ledger.deposit_credit(
                user=user,
                currency="CNY",
                amount=10**7 * 10**8,
                reference="bench",
                idempotency_key=f"bench-cny-{number}-{stamp}",
            )
        bench_endpoint(user, market)
        if balance_get(user=user, asset=market.symbol).available < 10**11:
            # a listing, as every issuance: its tokens sell as the user's own capacity
            capacity_list(
                user=user,
                market=market,
                quantity=str(10**12 // TOKENS_PER_MTOK),
                available_until=timezone.now() + timedelta(days=30),
            )
        users.append(user)
    return users


def order_body(rng: random.Random, mid: int) -> dict[str, Any]:
    side = rng.choice(["buy", "sell"])
    # about half of the limit orders cross the spread
    offset = rng.randint(-20, 20)
    ticks = max(1, mid + (offset if side == "buy" else -offset))
    return {
        "market": SYMBOL,
        "side": side,
        "type": "limit",
        "price": str(Decimal(ticks) / 100),
        "quantity": str(Decimal(rng.randint(10, 500)) / 1000),
        "time_in_force": rng.choice(["GTC", "GTC", "GTC", "IOC"]),
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Command(BaseCommand):
    help = "Benchmark the engine runner (durable commands/s) or the REST API (orders/s)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("part", choices=["runner", "api"])
        parser.add_argument("--orders", type=int, default=20000)
        parser.add_argument("--clients", type=int, default=64)
        parser.add_argument("--batch", type=int, default=50)
        parser.add_argument("--batch-clients", type=int, default=8)
        parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
        parser.add_argument("--only", choices=["single", "batched"], help="api: one of the two")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--intake-batch",
            type=int,
            default=1,
            help="runner mode: orders per intake transaction (setup, not timed)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["part"] == "runner":
            self.bench_runner(options)
        else:
            self.bench_api(options)

    def bench_runner(self, options: dict[str, Any]) -> None:
        settings.ENGINE_RUNNER = "external"  # place without processing
        market = bench_market()
        users = bench_users(20, market)
        rng = random.Random(options["seed"])
        runner = MarketRunner(market)
        runner.step()  # process leftovers of earlier runs before timing
        started = time.perf_counter()
        chunk = max(1, min(options["intake_batch"], MAX_BATCH))
        for first in range(0, options["orders"], chunk):
            requests = []
            for _ in range(min(chunk, options["orders"] - first)):
                body = order_body(rng, 800)
                requests.append(
                    order_request_parse(
                        market=market,
                        side=body["side"],
                        price=body["price"],
                        quantity=body["quantity"],
                        time_in_force=body["time_in_force"],
                    )
                )
            user = rng.choice(users)
            if len(requests) == 1:
                order_place(user=user, request=requests[0])
            else:
                order_place_many(user=user, requests=requests)
        intake = time.perf_counter() - started
        pending = OrderCommand.objects.filter(market=market, seq__isnull=True).count()
        runner = MarketRunner(market)
        runner.rebuild()
        started = time.perf_counter()
        processed = 0
        while True:
            done = runner.step()
            if not done:
                break
            processed += done
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"intake: {options['orders']} orders in {intake:.1f}s "
            f"({options['orders'] / intake:,.0f} orders/s, {chunk} per transaction, in-process)\n"
            f"runner: {processed} of {pending} pending commands committed in {elapsed:.2f}s "
            f"= {processed / elapsed:,.0f} commands/s durable (batches of up to {BATCH_SIZE})"
        )

    def bench_api(self, options: dict[str, Any]) -> None:
        market = bench_market()
        users = bench_users(options["clients"], market)
        keys = [
            api_key_create(user=u, name="bench", scopes=["read", "trade"]).secret for u in users
        ]
        port = 8791
        db = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}"
            f":{db['PORT'] or 5432}/{db['NAME']}",
            "ENGINE_RUNNER": "external",
            "DEBUG": "false",
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret-key-0123456789abcdef"),
            "SECURE_SSL_REDIRECT": "false",
            "API_THROTTLE_USER": "1000000/minute",
            "LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "exchange.asgi:application",
                "--port",
                str(port),
                "--workers",
                str(options["workers"]),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
        )
        engine = subprocess.Popen(
            [sys.executable, "manage.py", "run_engine", "--market", SYMBOL],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1)  # noqa: S310  # nosec B310
                    break
                except OSError:
                    time.sleep(0.2)
            for label, batch in (("single", 1), ("batched", options["batch"])):
                if options["only"] in (None, label):
                    self.run_clients(base, keys, options, batch, label)
        finally:
            for process in (server, engine):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)

    def run_clients(
        self, base: str, keys: list[str], options: dict[str, Any], batch: int, label: str
    ) -> None:
        total = options["orders"]
        clients = options["clients"] if batch == 1 else options["batch_clients"]
        per_client = total // clients
        latencies: list[float] = []
        lock = threading.Lock()
        failures = [0]

        host, port = base.removeprefix("http://").split(":")

        def client(number: int) -> None:
            # one persistent (keep-alive) connection per client, as a trading bot would hold
            rng = random.Random(options["seed"] * 1000 + number)
            headers = {
                "Authorization": f"Bearer {keys[number % len(keys)]}",
                "Content-Type": "application/json",
                "X-Forwarded-Proto": "https",
            }
            sent = 0
            mine = []
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            time.sleep(number * 0.005)
            connection.connect()
            while sent < per_client:
                size = min(batch, per_client - sent)
                bodies = [order_body(rng, 800) for _ in range(size)]
                if batch == 1:
                    path, payload = "/api/v1/orders", bodies[0]
                else:
                    path, payload = "/api/v1/orders/batch", {"orders": bodies}
                started = time.perf_counter()
                connection.request("POST", path, body=orjson.dumps(payload), headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status >= 300:
                    failures[0] += 1
                mine.append(time.perf_counter() - started)
                sent += size
            connection.close()
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        orders = per_client * clients
        self.stdout.write(
            f"api {label}: {orders} orders from {clients} clients in {elapsed:.1f}s = "
            f"{orders / elapsed:,.0f} orders/s; request latency p50 "
            f"{statistics.median(latencies) * 1000:.1f} ms, p99 "
            f"{percentile(latencies, 0.99) * 1000:.1f} ms; {failures[0]} failed requests"
        )
