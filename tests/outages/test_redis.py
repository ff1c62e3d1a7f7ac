"""Issue #16, finding 5: dependency outages, in this process (Redis pointed at a dead port or a
relay the test cuts; the machine's Redis and PostgreSQL are never stopped: other sessions use
them). The served-process tests (PostgreSQL cut under a running server, the runner through a
Redis outage) are in tests/outages/test_served.py."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle

from exchange.markets.api import MarketListApi
from orders.models import Order, Trade
from tests.orders.conftest import SYMBOL, place
from tests.outages.proxy import dead_port, outage_proxy

pytestmark = pytest.mark.django_db


def _redis_at(settings, url: str) -> None:
    """Point the cache and the channel layer of this process at ``url``."""
    settings.CACHES = {"default": {"BACKEND": "exchange.cache.RedisCache", "LOCATION": url}}
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": url}], "capacity": 1500, "expiry": 30},
        }
    }


def _levels(levels: list[list]) -> list[tuple[Decimal, Decimal, int]]:
    return [(Decimal(price), Decimal(quantity), count) for price, quantity, count in levels]


@pytest.fixture
def traders(trader, fund, market):
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=10_000_000, market=market)
    fund(buyer.user, cny=1000)
    return seller, buyer


def test_with_redis_unreachable_market_data_pages_and_the_api_are_served(
    settings, traders, client, caplog
) -> None:
    seller, buyer = traders
    place(seller, side="sell", price="8.20", quantity="1")
    place(buyer, side="buy", price="7.90", quantity="1.5")
    api = APIClient()
    book = api.get(f"/api/v1/markets/{SYMBOL}/book").json()
    ticker = api.get(f"/api/v1/markets/{SYMBOL}/ticker").json()

    _redis_at(settings, f"redis://127.0.0.1:{dead_port()}/0")
    caplog.set_level(logging.INFO)

    # public market data: from the database, the same book
    down_book = api.get(f"/api/v1/markets/{SYMBOL}/book")
    assert down_book.status_code == 200, down_book.content
    assert {k: down_book.json()[k] for k in ("bids", "asks", "checksum")} == {
        k: book[k] for k in ("bids", "asks", "checksum")
    }
    down_ticker = api.get(f"/api/v1/markets/{SYMBOL}/ticker")
    assert down_ticker.status_code == 200
    assert (down_ticker.json()["bid"], down_ticker.json()["ask"]) == (ticker["bid"], ticker["ask"])
    assert api.get(f"/api/v1/markets/{SYMBOL}/trades").status_code == 200

    # pages render; the live feed shows itself offline (its websocket is refused, see the
    # consumer test) from the status element the page carries
    for path in ("/", f"/trade/{SYMBOL}/", "/markets/"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert b'data-testid="feed-status"' in page.content or path == "/markets/"

    # authenticated API calls, and orders: the runner commits, the trade is made
    assert buyer.get("/api/v1/orders").status_code == 200
    taken = place(buyer, side="buy", price="8.20", quantity="1")
    assert taken["status"] == "filled"
    assert Trade.objects.filter(price_ticks=820).count() == 1

    # the outage is logged once, not a traceback per cache call
    outage_lines = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len([r for r in outage_lines if r.name == "exchange.outages"]) == 1
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]


def test_healthz_reports_each_dependency_and_redis_down_as_degraded(settings, client, market):
    healthy = client.get("/healthz")
    assert healthy.status_code == 200, healthy.json()
    checks = healthy.json()["checks"]
    assert [checks[name]["ok"] for name in ("database", "redis", "runner")] == [True] * 3
    assert checks["runner"]["markets"][SYMBOL]["oldest_pending_seconds"] == 0.0

    _redis_at(settings, f"redis://127.0.0.1:{dead_port()}/0")
    down = client.get("/healthz")
    # still ready: every instance shares that Redis, and the API serves without it
    assert down.status_code == 200
    assert down.json()["status"] == "degraded"
    assert down.json()["checks"]["redis"] == {
        "ok": False,
        "error": "ConnectionError",
        "ms": down.json()["checks"]["redis"]["ms"],
    }
    assert down.json()["checks"]["database"]["ok"] is True
    # liveness touches no dependency
    live = client.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})


def test_healthz_reports_a_stalled_runner_as_degraded(settings, client, traders):
    from datetime import timedelta

    from django.utils import timezone

    from orders.models import OrderCommand

    seller, _ = traders
    place(seller, side="sell", price="8.20", quantity="1")
    order = Order.objects.get()
    # a command the runner has not taken for two minutes
    command = OrderCommand.objects.create(market=order.market, order=order, kind="cancel")
    OrderCommand.objects.filter(pk=command.pk).update(
        created_at=timezone.now() - timedelta(seconds=120)
    )
    settings.HEALTHZ_RUNNER_MAX_LAG_SECONDS = 60.0
    stalled = client.get("/healthz")
    assert stalled.status_code == 200  # orders are still taken; the body says what lags
    assert stalled.json()["status"] == "degraded"
    runner = stalled.json()["checks"]["runner"]
    assert (runner["ok"], runner["error"]) == (False, "stalled")
    assert 119 < runner["markets"][SYMBOL]["oldest_pending_seconds"] < 130


def test_throttles_fail_open_while_redis_is_down(settings, monkeypatch, market):
    """The documented direction: DRF's throttles are a convenience (money limits are in the
    ledger), so without Redis to count in they let requests through rather than refuse all."""
    monkeypatch.setattr(MarketListApi, "throttle_classes", [AnonRateThrottle])
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "2/minute"})
    api = APIClient()
    assert [api.get("/api/v1/markets").status_code for _ in range(3)] == [200, 200, 429]

    _redis_at(settings, f"redis://127.0.0.1:{dead_port()}/0")
    assert [api.get("/api/v1/markets").status_code for _ in range(3)] == [200, 200, 200]


def test_after_redis_returns_no_reader_sees_state_older_than_the_database(settings, traders):
    """Writes dropped during the outage (the runner's book state) are repaired when Redis
    answers again: the book read after the outage is the database's, not the one stored
    before it."""
    seller, _ = traders
    redis = urlsplit(django_settings.REDIS_URL)
    api = APIClient()
    with outage_proxy(redis.hostname or "127.0.0.1", redis.port or 6379) as proxy:
        _redis_at(settings, f"redis://127.0.0.1:{proxy.port}{redis.path}")
        place(seller, side="sell", price="8.20", quantity="1")
        before = api.get(f"/api/v1/markets/{SYMBOL}/book").json()
        assert _levels(before["asks"]) == [(Decimal("8.2"), Decimal(1), 1)]

        proxy.down()
        place(seller, side="sell", price="8.10", quantity="2")  # the runner's store is dropped
        during = api.get(f"/api/v1/markets/{SYMBOL}/book").json()
        both = [(Decimal("8.1"), Decimal(2), 1), (Decimal("8.2"), Decimal(1), 1)]
        assert _levels(during["asks"]) == both

        proxy.up()
        time.sleep(1.1)  # the cache retries Redis at most once a second
        after = api.get(f"/api/v1/markets/{SYMBOL}/book").json()
        assert _levels(after["asks"]) == both
        assert after["checksum"] == during["checksum"]
