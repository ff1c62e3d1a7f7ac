"""Benchmark of the gateway (not a test): N concurrent streaming clients straight to a local
upstream (the demo upstream, fixed time to first token and token rate), then the same clients
through the gateway, in one run. Reports the time to first token (p50/p99) of both, the
gateway's added latency (the difference) and completed requests/s. Run against PostgreSQL in a
scratch database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench python manage.py migrate
    DATABASE_URL=... REDIS_URL=... python manage.py bench_gateway --clients 200 --requests 4000

The data it creates (users bench-gw-*, markets GWBENCH-IN-CNY / GWBENCH-OUT-CNY, lots bought
through the order path) stays in that database; each run tops the buyer's lots up.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import uvloop
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from django.utils import timezone

from accounts.models import User
from accounts.services import api_key_create, user_create
from exchange.delivery.endpoints.crypto import secret_encrypt
from exchange.delivery.endpoints.models import Endpoint, HealthStatus
from exchange.delivery.escrow.selectors import model_markets
from exchange.delivery.escrow.services import holdings_get
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.ledger import services as ledger
from exchange.markets.models import Market
from exchange.markets.services import DEMO_MARKETS, market_create
from exchange.runner.embedded import inline_process
from orders.capacity import capacity_list
from orders.services import order_place, order_request_parse

ROOT = Path(__file__).resolve().parents[5]
MODEL = "gateway-bench"
SYMBOLS = {"input": "GWBENCH-IN-CNY", "output": "GWBENCH-OUT-CNY"}
PROMPT = [{"role": "user", "content": "Benchmark."}]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _user(email: str, role: str) -> User:
    return User.objects.filter(email=email).first() or user_create(
        email=email, password=None, role=role, provider_grant_reason="Benchmark (bench_gateway)."
    )


def bench_setup(*, upstream: str, buyers: int, tokens_each: int) -> list[str]:
    """Markets, a provider whose endpoint is ``upstream``, ``buyers`` buyers holding enough lots
    of it; returns their consume keys."""
    for kind, symbol in SYMBOLS.items():
        if not Market.objects.filter(symbol=symbol).exists():
            spec = next(m for m in DEMO_MARKETS if m["token_kind"] == kind)
            market_create(
                **{
                    **spec,
                    "symbol": symbol,
                    "base": symbol.removesuffix("-CNY"),
                    "model_name": "Gateway-Bench",
                    "region": "cn-east",
                    "quote_currency": "CNY",
                    # the benchmark measures the gateway, not SLA credits
                    "max_first_token_latency_ms": 60_000,
                    "min_throughput_tps": 1,
                }
            )
    pair = model_markets(MODEL)
    assert pair is not None
    provider = _user("bench-gw-provider@example.com", "provider")
    for market in pair.markets:
        Endpoint.objects.update_or_create(
            provider=provider,
            market=market,
            defaults={
                "base_url": upstream,
                "api_key_ciphertext": secret_encrypt("bench"),
                "model_id": "exchange-demo",
                "concurrency_limit": 100_000,
                "status": HealthStatus.HEALTHY,
                "down_since": None,
                "failing_since": None,
            },
        )
    keys = []
    for number in range(buyers):
        buyer = _user(f"bench-gw-buyer-{number}@example.com", "buyer")
        held = holdings_get(user=buyer, pair=pair)
        have = min((min(h.input_tokens, h.output_tokens) for h in held), default=0)
        if have < tokens_each:
            _lots_buy(provider, buyer, pair.markets, mtok=max(1, -(-tokens_each // 1_000_000)))
        keys.append(api_key_create(user=buyer, name="bench", scopes=["consume"]).secret)
    return keys


def _lots_buy(provider: User, buyer: User, markets: list[Market], mtok: int) -> None:
    """The buyer takes ``mtok`` MTok of each market from the provider, at 1 CNY per MTok,
    through the order path and the engine runner (as any trade)."""
    ledger.deposit_credit(
        user=buyer, currency="CNY", amount=mtok * 4 * 10**8, reference="bench-gateway",
        idempotency_key=f"bench-gw-{buyer.pk}-{time.time_ns()}",
    )  # fmt: skip
    until = timezone.now() + timedelta(days=1)
    for market in markets:
        capacity_list(
            user=provider, market=market, quantity=str(mtok), available_until=until,
            ask_price="1.00",
        )  # fmt: skip
        inline_process(market)
        request = order_request_parse(market=market, side="buy", price="1.00", quantity=str(mtok))
        order_place(user=buyer, request=request)
        inline_process(market)


class _Connection:
    """One keep-alive HTTP/1.1 connection of a benchmark client. Deliberately minimal (about
    10 µs a chunk): httpx's pool at 200 connections cost the client more CPU than the servers
    it measured, and the figures were the client's."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def stream(self, path: str, body: bytes, key: str) -> tuple[float, float]:
        """(time to first token, total) of one streamed completion, in seconds."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        started = time.perf_counter()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = head.lower()
        if b"transfer-encoding: chunked" not in headers:
            length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
            payload = await self.reader.readexactly(length)
            raise RuntimeError(f"HTTP {status}: {payload[:300]!r}")
        first = 0.0
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            data = await self.reader.readexactly(size + 2)
            if size == 0:
                break
            if not first and b'"content":"' in data and b'"content":""' not in data:
                first = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        return first, time.perf_counter() - started


async def _load(
    base: str,
    keys: list[str],
    clients: int,
    requests: int,
    body: bytes,
    server_pid: int,
    database_pids: Callable[[], tuple[int, ...]] = tuple,
) -> dict[str, Any]:
    address = base.removeprefix("http://").split("/", 1)
    host, port = address[0].split(":")
    path = "/" + address[1] + "/chat/completions"
    first_tokens: list[float] = []
    errors = 0
    remaining = iter(range(requests))

    async def worker(key: str) -> None:
        nonlocal errors
        connection = _Connection(host, int(port))
        for _ in remaining:
            try:
                first, _total = await connection.stream(path, body, key)
                first_tokens.append(first)
            except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError):
                errors += 1
                connection = _Connection(host, int(port))

    await _Connection(host, int(port)).stream(path, body, keys[0])  # warm up
    started, cpu = time.perf_counter(), time.process_time()
    gateway_cpu = _cpu_seconds(server_pid)
    database_before = {pid: _cpu_seconds(pid) for pid in await asyncio.to_thread(database_pids)}
    await asyncio.gather(*(worker(keys[n % len(keys)]) for n in range(clients)))
    elapsed = time.perf_counter() - started
    cpu, gateway_cpu = time.process_time() - cpu, _cpu_seconds(server_pid) - gateway_cpu
    # a backend the pool opened during the run counts from 0
    database_after = await asyncio.to_thread(database_pids)
    database_cpu = sum(_cpu_seconds(pid) - database_before.get(pid, 0.0) for pid in database_after)
    return {
        "completed": len(first_tokens),
        "errors": errors,
        "per_second": len(first_tokens) / elapsed,
        "p50": _percentile(first_tokens, 0.5) * 1000,
        "p99": _percentile(first_tokens, 0.99) * 1000,
        "mean": statistics.fmean(first_tokens) * 1000 if first_tokens else 0.0,
        # CPU per completed request: of the server measured, and of this client (the client
        # must not be what limits the figures)
        "server_cpu_ms": gateway_cpu * 1000 / max(1, len(first_tokens)),
        "client_cpu_ms": cpu * 1000 / max(1, len(first_tokens)),
        "client_cpu_share": cpu / elapsed,
        # PostgreSQL's backends serving this database (same machine), per request
        "database_cpu_ms": database_cpu * 1000 / max(1, len(first_tokens)),
        "load_average": os.getloadavg()[0],
    }


def _cpu_seconds(*pids: int) -> float:
    """User + system CPU of processes ``pids`` and their children (uvicorn's workers), from
    /proc (Linux): on a shared machine, CPU per request says more than requests/s."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) in pids or int(fields[1]) in pids:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _database_pids() -> tuple[int, ...]:
    """The PostgreSQL backends connected to this database now (the gateway's pool keeps its
    connections, so they serve the whole run; their CPU is read from /proc when PostgreSQL
    runs on this machine, else it counts 0). Called in a thread of its own (its own
    connection, closed after)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            return tuple(row[0] for row in cursor.fetchall())
    finally:
        connection.close()


def _wait_up(url: str, headers: dict[str, str] | None = None) -> None:
    for _ in range(300):
        try:
            request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
            urllib.request.urlopen(request, timeout=1)  # noqa: S310  # nosec B310
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Command(BaseCommand):
    help = "Benchmark the gateway: added time to first token and requests/s against direct."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=200, help="concurrent streams")
        parser.add_argument("--requests", type=int, default=2000, help="per phase")
        parser.add_argument("--ttft-ms", type=int, default=50, help="upstream first-token delay")
        parser.add_argument("--tps", type=int, default=200, help="upstream tokens per second")
        parser.add_argument("--tokens", type=int, default=16, help="completion length")
        parser.add_argument("--workers", type=int, default=1, help="gateway processes")
        parser.add_argument(
            "--buyers", type=int, default=20, help="buyers (own lots) the clients share"
        )
        parser.add_argument("--port", type=int, default=8131, help="gateway; upstream is +1")

    def handle(self, *args: Any, **options: Any) -> None:
        gateway_port, upstream_port = options["port"], options["port"] + 1
        upstream = f"http://127.0.0.1:{upstream_port}/v1"
        per_request = len(PROMPT[0]["content"]) + 16 + options["tokens"]
        keys = bench_setup(
            upstream=upstream,
            buyers=options["buyers"],
            tokens_each=options["requests"] * per_request * 2 // options["buyers"] + 10_000,
        )
        body = orjson.dumps(
            {"model": MODEL, "stream": True, "max_tokens": options["tokens"], "messages": PROMPT}
        )
        database = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": os.environ.get("DATABASE_URL")
            or f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}",
            "DEMO": "0",
            "DEMO_UPSTREAM": "0",
            # the benchmark's upstream is on loopback, which the SSRF guard refuses otherwise
            "DELIVERY_UPSTREAM_ALLOW_PRIVATE": "1",
            "ENGINE_RUNNER": "external",
            "DEMO_UPSTREAM_TTFT_MS": str(options["ttft_ms"]),
            "DEMO_UPSTREAM_TPS": str(options["tps"]),
            "DEMO_UPSTREAM_LENGTH": str(options["tokens"]),
        }
        uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
        upstream_process = subprocess.Popen(
            [*uvicorn, "exchange.delivery.gateway.demo_upstream:app", "--port", str(upstream_port)],
            cwd=ROOT, env=env,
        )  # fmt: skip
        gateway_process = subprocess.Popen(
            [*uvicorn, "exchange.asgi:application", "--port", str(gateway_port), "--workers",
             str(options["workers"])],
            cwd=ROOT, env=env,
        )  # fmt: skip
        try:
            _wait_up(f"{upstream}/models", {"Authorization": "Bearer bench"})
            _wait_up(f"http://127.0.0.1:{gateway_port}/healthz")
            before = Generation.objects.count()
            self.stdout.write(
                f"{options['clients']} concurrent streams, {options['requests']} requests per "
                f"phase; upstream: first token after {options['ttft_ms']} ms, "
                f"{options['tokens']} tokens at {options['tps']}/s; "
                f"gateway workers: {options['workers']}; buyers: {options['buyers']}"
            )
            results = {}
            for name, base, secrets, server in (
                ("direct", upstream, ["bench"], upstream_process),
                ("gateway", f"http://127.0.0.1:{gateway_port}/v1", keys, gateway_process),
            ):
                results[name] = uvloop.run(
                    _load(base, secrets, options["clients"], options["requests"], body, server.pid,
                          _database_pids if name == "gateway" else tuple)
                )  # fmt: skip
                r = results[name]
                self.stdout.write(
                    f"{name:8} completed {r['completed']:6d} errors {r['errors']:4d}  "
                    f"{r['per_second']:8.1f} req/s  TTFT p50 {r['p50']:7.1f} ms  "
                    f"p99 {r['p99']:7.1f} ms  mean {r['mean']:7.1f} ms"
                )
                self.stdout.write(
                    f"{'':8} CPU per request: server {r['server_cpu_ms']:.2f} ms, client "
                    f"{r['client_cpu_ms']:.2f} ms (client busy {r['client_cpu_share']:.0%})"
                    + (f", PostgreSQL {r['database_cpu_ms']:.2f} ms" if name == "gateway" else "")
                    + f"; load average {r['load_average']:.1f}"
                )
            direct, gateway = results["direct"], results["gateway"]
            self.stdout.write(
                f"added by the gateway: p50 {gateway['p50'] - direct['p50']:.1f} ms, "
                f"p99 {gateway['p99'] - direct['p99']:.1f} ms; "
                f"{gateway['per_second']:.1f} req/s through it"
            )
            served = Generation.objects.count() - before
            completed = Generation.objects.filter(status=GenerationStatus.COMPLETED).count()
            self.stdout.write(f"generations written: {served} (completed in all: {completed})")
        finally:
            for process in (gateway_process, upstream_process):
                process.terminate()
                process.wait(timeout=30)
