"""A live exchange for the gateway: uvicorn serving ``exchange.asgi`` (the gateway and the demo
upstream mounted in it, ``DEMO_UPSTREAM=1``) against the test database and Redis; providers whose
endpoints point at the demo upstream with scripted behaviour; buyers holding lots bought through
the real order API and engine runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import openai
import pytest
from django.conf import settings
from django.utils import timezone

from accounts.services import api_key_create, profile_update
from exchange.delivery.endpoints.crypto import secret_encrypt
from exchange.delivery.endpoints.models import Endpoint
from exchange.delivery.escrow.selectors import ModelPair
from orders.capacity import capacity_list
from tests.asgi_server import ROOT, database_url, free_port, wait_until_serving
from tests.delivery.escrow.conftest import (  # noqa: F401  (shared fixtures)
    IN,
    MODEL,
    OUT,
    Trader,
    _fresh_inline_runner,
    make_trader,
    pair,
)

UNITS_PER_OUT_TOKEN = 800  # 8 CNY per MTok = 8e-6 CNY = 800 ledger units (1e-8) a token
UNITS_PER_IN_TOKEN = 200  # 2 CNY per MTok


class Server:
    """A uvicorn process serving the exchange; ``kill()`` is SIGKILL (no clean-up at all)."""

    def __init__(self, **extra_env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            # the gateway needs no runner; the test process matches trades inline
            "TEST_ENGINE_RUNNER": "inline",
            "DEMO_UPSTREAM": "1",
            "GATEWAY_READ_TIMEOUT_SECONDS": "10",
            # each test makes its own markets (new ids) and changes specs: read them fresh
            "GATEWAY_CACHE_SECONDS": "0",
            **extra_env,
        }
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "exchange.asgi:application", "--host",
             "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env=self.env,
        )  # fmt: skip
        wait_until_serving(self.process, self.base)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@contextmanager
def exchange_server(**extra_env: str) -> Iterator[Server]:
    server = Server(**extra_env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(django_db_setup: None, django_db_blocker: Any) -> Iterator[Server]:
    """One server for a module's tests (each test's rows are its own: transactional tests)."""
    with django_db_blocker.unblock(), exchange_server() as running:
        yield running


def demo_url(base: str, behaviour: str) -> str:
    """The demo upstream's base URL with scripted behaviour (see demo_upstream's docstring)."""
    return f"{base}/demo-upstream/p/{behaviour}/v1"


@pytest.fixture
def make_provider(make_trader: Callable[..., Trader], pair: ModelPair) -> Callable[..., Trader]:  # noqa: F811
    """A provider named ``name`` with endpoints at the demo upstream (``behaviour``) in both
    markets of the pair, listing ``quantity`` MTok in each until ``days`` from now."""

    def make(
        base: str,
        name: str,
        behaviour: str = "ttft=10,tps=1000",
        *,
        days: int = 1,
        quantity: str = "0.01",
        out_price: str = "8.00",
        in_price: str = "2.00",
    ) -> Trader:
        trader = make_trader(role="provider")
        profile_update(user=trader.user, display_name=name)
        for market in pair.markets:
            Endpoint.objects.create(
                provider=trader.user, market=market, base_url=demo_url(base, behaviour),
                api_key_ciphertext=secret_encrypt("demo-upstream-key"),
                model_id="exchange-demo", concurrency_limit=64,
            )  # fmt: skip
        until = timezone.now() + timedelta(days=days)
        for market, price in ((pair.output_market, out_price), (pair.input_market, in_price)):
            capacity_list(
                user=trader.user, market=market, quantity=quantity, available_until=until,
                ask_price=price,
            )  # fmt: skip
        return trader

    return make


def buy(buyer: Trader, quantity: str = "0.01", out_price: str = "8.00", in_price: str = "2.00"):
    """The buyer takes ``quantity`` MTok of each market of the pair."""
    for symbol, price in ((OUT, out_price), (IN, in_price)):
        assert (
            buyer.order(market=symbol, side="buy", price=price, quantity=quantity)["status"]
            == "filled"
        )


def consume_key(user: Any, **limits: Any) -> str:
    return api_key_create(
        user=user, name="agent", scopes=["read", "consume"], limits=limits or None
    ).secret


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0, timeout=30)
