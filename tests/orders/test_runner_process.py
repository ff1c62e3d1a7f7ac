"""The runner as a real separate process, over loopback HTTP, on PostgreSQL — and kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Sum

from accounts.services import api_key_create
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger.selectors import audit_run
from orders.models import OPEN_STATUSES, Order, OrderCommand, Trade
from tests.orders.conftest import SYMBOL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True)]


def runner_env() -> dict[str, str]:
    db = connection.settings_dict
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    url = f"postgres://{db['USER'] or 'postgres'}@{host}/{db['NAME']}"
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": url,
        "TEST_ENGINE_RUNNER": "external",
    }


class RunnerProcess:
    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> float:
        """Start the runner; returns seconds until it holds the market lock."""
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_engine"],
            cwd=ROOT,
            env=runner_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("engine runner ready: 1 market"), line
        return time.monotonic() - started

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def http(base: str, key: str, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def runner(postgres, settings):
    settings.ENGINE_RUNNER = "external"
    settings.ORDER_WAIT_SECONDS = 1.0
    process = RunnerProcess()
    yield process
    process.stop()


def test_orders_are_matched_by_a_separate_runner_process(
    runner, live_server, market, make_user, fund
) -> None:
    seller, buyer = make_user(), make_user()
    fund(seller, tokens=1_000_000, market=market)
    fund(buyer, cny=100)
    seller_key = api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret
    buyer_key = api_key_create(user=buyer, name="b", scopes=["read", "trade"]).secret
    assert runner.start() < 10
    status, ask = http(
        live_server.url,
        seller_key,
        "POST",
        "/api/v1/orders",
        {"market": SYMBOL, "side": "sell", "price": "8.00", "quantity": "1"},
    )
    assert (status, ask["status"]) == (201, "open")
    status, bid = http(
        live_server.url,
        buyer_key,
        "POST",
        "/api/v1/orders",
        {"market": SYMBOL, "side": "buy", "price": "8.00", "quantity": "0.4"},
    )
    assert (status, bid["status"], bid["filled_quantity"]) == (201, "filled", "0.4")
    assert Trade.objects.count() == 1


KILL_POINTS = int(os.environ.get("KILL_POINTS", "10"))
CLIENTS = 20
ORDERS_PER_CLIENT = 50


def test_kill_minus_nine_loses_and_duplicates_nothing(
    runner, live_server, market, make_user, fund
) -> None:
    """20 clients × 50 orders over HTTP; the runner is SIGKILLed at random moments."""
    keys, users = [], []
    for _ in range(CLIENTS):
        user = make_user()
        fund(user, cny=10_000, tokens=100_000_000, market=market)
        users.append(user)
        keys.append(api_key_create(user=user, name="bot", scopes=["read", "trade"]).secret)
    runner.start()
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()
    errors: list[str] = []

    def client(number: int) -> None:
        rng = random.Random(number)
        for index in range(ORDERS_PER_CLIENT):
            body = {
                "market": SYMBOL,
                "side": rng.choice(["buy", "sell"]),
                "price": f"{rng.randint(790, 810) / 100:.2f}",
                "quantity": f"{rng.randint(1, 50) / 100:.2f}",
                "client_order_id": f"c{number}-{index}",
                "time_in_force": rng.choice(["GTC", "GTC", "IOC"]),
            }
            for _attempt in range(20):
                try:
                    status, data = http(
                        live_server.url, keys[number], "POST", "/api/v1/orders", body
                    )
                except OSError:
                    time.sleep(0.05)
                    continue
                if status in (200, 201):
                    with lock:
                        acknowledged[body["client_order_id"]] = data["id"]
                    break
                if status >= 500:
                    time.sleep(0.05)
                    continue
                errors.append(f"{status} {data}")
                break

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    restart_times = []
    rng = random.Random(7)
    for _ in range(KILL_POINTS):
        time.sleep(rng.uniform(0.1, 0.6))
        runner.kill9()
        restart_times.append(runner.start())
    for thread in threads:
        thread.join(timeout=300)
    deadline = time.monotonic() + 30
    while OrderCommand.objects.filter(seq__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.1)

    assert errors == []
    assert max(restart_times) < 10
    assert len(acknowledged) == CLIENTS * ORDERS_PER_CLIENT
    # every acknowledged order exists exactly once and has been processed
    counts = Counter(Order.objects.values_list("client_order_id", flat=True))
    assert all(counts[cid] == 1 for cid in acknowledged)
    assert Order.objects.count() == len(acknowledged)
    assert not Order.objects.filter(status="pending").exists()
    assert not OrderCommand.objects.filter(seq__isnull=True).exists()
    # gap-free journal; trades unique per (seq, index) by constraint; fills agree with trades
    seqs = list(OrderCommand.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    filled = Order.objects.aggregate(total=Sum("filled_lots"))["total"] or 0
    traded = Trade.objects.aggregate(total=Sum("quantity_lots"))["total"] or 0
    assert filled == 2 * traded
    # the ledger holds, and every hold is accounted for by an open order
    report = audit_run()
    assert report.is_ok, report
    for user in users:
        for asset in ("CNY", SYMBOL):
            held = ledger_selectors.balance_get(user=user, asset=asset).held
            open_holds = (
                Order.objects.filter(
                    user=user, hold_asset=asset, status__in=OPEN_STATUSES
                ).aggregate(total=Sum("hold_remaining"))["total"]
                or 0
            )
            assert held == open_holds, (user.email, asset)
