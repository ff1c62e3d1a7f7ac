"""Issue #16, finding 5, in a browser: with Redis cut under a served instance the trading page
still renders and shows its live feed offline (not "live" and not flapping), and shows it live
again once Redis is back."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from tests.asgi_server import asgi_server
from tests.orders.conftest import SYMBOL
from tests.outages.proxy import outage_proxy
from tests.web.test_browser import Console, _require_chromium, new_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_the_trade_page_renders_with_its_feed_offline_while_redis_is_down(
    postgres, redis_url, market, browser
) -> None:
    from playwright.sync_api import expect

    _require_chromium()
    redis = urlsplit(settings.REDIS_URL)
    redis_proxy = outage_proxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    with (
        redis_proxy as proxy,
        asgi_server(REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0", DEMO="0") as (base, _),
    ):
        page, console = new_page(browser)
        dot = page.locator("[data-testid=feed-status]")
        page.goto(f"{base}/trade/{SYMBOL}/")
        expect(dot).to_have_attribute("data-status", "live")

        proxy.down()
        answer = page.goto(f"{base}/trade/{SYMBOL}/")
        assert answer is not None
        assert answer.status == 200
        assert SYMBOL in page.content()  # rendered from the database
        expect(dot).to_have_attribute("data-status", "offline")

        proxy.up()
        expect(dot).to_have_attribute("data-status", "live", timeout=30_000)
        # only the refused subscriptions' warnings, no page error
        Console.assert_clean(
            type("Errors", (), {"errors": [e for e in console.errors if "feed:" not in e]})()
        )
