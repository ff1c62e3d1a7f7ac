"""Operators see what the benchmarks measure: /metrics (Prometheus) after real orders through a
served exchange, its access rule, request ids on every answer, and JSON log lines."""

from __future__ import annotations

import json
import logging
import time
import urllib.request

import pytest
import structlog
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from accounts.services import api_key_create
from exchange.logs import json_formatter
from tests.asgi_server import asgi_server
from tests.marketdata.test_e2e import post
from tests.orders.conftest import SYMBOL


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return samples(response.read().decode())


@pytest.mark.django_db(transaction=True)
def test_orders_through_a_served_exchange_move_the_series(postgres, redis_url, market, make_user,
                                                          fund) -> None:  # fmt: skip
    seller, buyer = make_user(), make_user()
    fund(seller, tokens=10_000_000, market=market)
    fund(buyer, cny=1000)
    seller_key = api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret
    buyer_key = api_key_create(user=buyer, name="b", scopes=["read", "trade"]).secret
    with asgi_server(FEED_COALESCE_MS="0") as (base, port):
        before = scrape(base)
        with connect(f"ws://127.0.0.1:{port}/ws/v1", origin=f"http://127.0.0.1:{port}") as ws:
            ws.send(json.dumps({"op": "subscribe", "channels": ["trades"], "markets": [SYMBOL]}))
            assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"
            orders = 0
            for key, body in (
                (seller_key, {"side": "sell", "price": "8.10", "quantity": "2"}),
                (buyer_key, {"side": "buy", "price": "8.10", "quantity": "1"}),  # trades
            ):
                assert post(base, key, {"market": SYMBOL, **body})["status"] != "pending"
                orders += 1
            while json.loads(ws.recv(timeout=10)).get("channel") != "trades":
                pass  # the trade reached this connection
            after = scrape(base)
        deadline = time.monotonic() + 10  # the server ends the connection's task after the close
        while (closed := scrape(base))[("exchange_websocket_connections", ())] and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("exchange_http_request_seconds_count", route="order", status="2xx") == orders
    assert moved("exchange_runner_batch_commands_count", market=SYMBOL) >= 1
    assert moved("exchange_runner_batch_commands_sum", market=SYMBOL) >= orders
    assert moved("exchange_runner_commit_seconds_count", market=SYMBOL) >= 1
    assert moved("exchange_runner_batch_seconds_sum", market=SYMBOL) > 0
    assert ("exchange_runner_lag_seconds", (("market", SYMBOL),)) in after
    assert moved("exchange_feed_delivery_lag_seconds_count", channel="market") >= 1
    assert after[("exchange_websocket_connections", ())] == 1
    assert closed[("exchange_websocket_connections", ())] == 0
    # the first scrape itself was timed, as a web request
    assert moved("exchange_http_request_seconds_count", route="web", status="2xx") >= 1


@pytest.mark.django_db(transaction=True)
def test_every_answer_carries_a_request_id_and_a_sane_one_is_kept(postgres, redis_url) -> None:
    with asgi_server() as (base, _port):
        with urllib.request.urlopen(base + "/healthz", timeout=30) as response:
            generated = response.headers["X-Request-ID"]
        request = urllib.request.Request(base + "/healthz", headers={"X-Request-ID": "bot-42.a"})
        with urllib.request.urlopen(request, timeout=30) as response:
            kept = response.headers["X-Request-ID"]
        request = urllib.request.Request(base + "/healthz", headers={"X-Request-ID": "a b\tc"})
        with urllib.request.urlopen(request, timeout=30) as response:
            replaced = response.headers["X-Request-ID"]
    assert len(generated) == 32
    assert int(generated, 16) >= 0
    assert kept == "bot-42.a"
    assert replaced != "a b\tc"
    assert len(replaced) == 32


@pytest.mark.django_db
def test_metrics_are_for_loopback_or_the_token_only(settings) -> None:
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    answer = client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-secret"
    )
    assert answer.status_code == 200
    assert b"exchange_runner_batch_seconds" in answer.content


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.LogRecord(
        "orders.services", logging.WARNING, __file__, 1, "order %s refused", (7,), None
    )
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        line = json_formatter().format(record)
    parsed = json.loads(line)
    assert parsed["event"] == "order 7 refused"
    assert parsed["level"] == "warning"
    assert parsed["logger"] == "orders.services"
    assert parsed["request_id"] == "r-1"
    assert parsed["timestamp"].endswith("Z")


@pytest.mark.django_db(transaction=True)
def test_the_runner_lag_falls_to_zero_once_nothing_waits(market, make_user, fund) -> None:
    from datetime import timedelta

    from django.test import override_settings
    from django.utils import timezone

    from exchange.metrics import RUNNER_LAG_SECONDS
    from exchange.runner.core import MarketRunner
    from orders.models import OrderCommand
    from orders.services import order_place, order_request_parse

    user = make_user()
    fund(user, cny=100)
    with override_settings(ENGINE_RUNNER="external", ORDER_WAIT_SECONDS=0):  # journalled only
        order_place(user=user, request=order_request_parse(
            market=market, side="buy", type="limit", price="8.00", quantity="1"))  # fmt: skip
    # the command has waited a minute when the runner takes it
    OrderCommand.objects.update(created_at=timezone.now() - timedelta(seconds=60))
    runner = MarketRunner(market)
    gauge = RUNNER_LAG_SECONDS.labels(market.symbol)
    assert runner.step() == 1
    assert gauge._value.get() >= 60
    assert runner.step() == 0  # idle
    assert gauge._value.get() == 0
