"""A newcomer's first visit, in a real browser: sign up, get demo funds, place a limit order that
rests at a sane price, and see it fill when another user trades against it — in English and
简体中文, on a desktop and on a 390 px phone, with no sideways scrolling and no console errors.

The fixtures (live uvicorn with the embedded runner, Debian's Chromium) are those of
test_browser.py. Screenshots go to test-artifacts/newcomer-*.png.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import User
from accounts.services import api_key_create
from exchange.markets.services import DEMO_MARKETS, market_create
from orders.models import Order
from tests.asgi_server import asgi_server
from tests.orders.conftest import SYMBOL
from tests.web.test_browser import PASSWORD, _require_chromium, api, browser, new_page, shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
__all__ = ["browser"]  # the shared Chromium fixture, imported for pytest to find

PHONE = 390
DESKTOP = 1280
# What the page says, per language: the test reads the page as its user would.
WORDS = {
    "en": {"open": "Open", "filled": "Filled", "fill": "Filled: bought 2.000 MTok at 8.00 CNY."},
    "zh-hans": {
        "open": "挂单中",
        "filled": "已成交",
        "fill": "已成交：以 8.00 CNY 买入 2.000 百万 token。",
    },
}


@pytest.fixture
def demo_server(postgres, redis_url):
    """The server as `make run` serves it: DEMO on, so a newcomer may take demo funds."""
    _require_chromium()
    with asgi_server(DEMO="1", DEMO_BOTS="0", WS_HEARTBEAT_SECONDS="5") as (base, _port):
        yield base


@pytest.fixture
def quiet_market(demo_server, db):
    """The market, created only after the server's demo simulator looked for open markets and,
    finding none, gave up: no bot trades in it, so what fills the newcomer's order is the test's
    own second user (the test checks that no one else placed an order)."""
    from exchange.demo.seed import DEMO_LOGIN_EMAIL

    deadline = time.monotonic() + 30
    # the simulator creates the demo users, then looks for markets at once
    while not User.objects.filter(email=DEMO_LOGIN_EMAIL).exists():
        assert time.monotonic() < deadline, "the demo did not start"
        time.sleep(0.1)
    time.sleep(1)
    spec = next(m for m in DEMO_MARKETS if m["symbol"] == SYMBOL)
    return market_create(
        **{**spec, "maker_fee_rate": Decimal("0.001"), "taker_fee_rate": Decimal("0.002")}
    )


def assert_fits(page, where: str) -> None:
    """No sideways scrolling: the document is no wider than the window."""
    widths = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{where} scrolls sideways: {widths[0]}px > {widths[1]}px"


def open_menu_on_phone(page, width: int) -> None:
    if width <= PHONE:
        page.locator("[data-testid=menu-button]").click()


@pytest.mark.parametrize("width", [DESKTOP, PHONE], ids=["desktop", "phone"])
@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_newcomer_signs_up_gets_demo_funds_and_sees_an_order_fill(
    demo_server, quiet_market, browser, make_user, fund, language, width
):
    from playwright.sync_api import expect

    base = demo_server
    words = WORDS[language]
    name = f"newcomer-{language}-{'phone' if width <= PHONE else 'desktop'}"
    email = f"{name}@example.com"
    # The other side of the market, made through the services: an ask above the newcomer's price.
    seller = make_user(role="provider")
    fund(seller, tokens=10_000_000, market=quiet_market)
    seller_key = api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret
    api(base, seller_key, "POST", "/api/v1/orders",
        {"market": SYMBOL, "side": "sell", "price": "8.20", "quantity": "3"})  # fmt: skip

    page, console = new_page(browser, width=width, height=900 if width > PHONE else 844)
    page.goto(base + "/")
    header = page.locator("header.topbar").bounding_box()
    assert header["height"] < 70, f"the header wraps: {header['height']}px"
    if language != "en":
        open_menu_on_phone(page, width)
        shot(page, f"{name}-0-menu")
        page.locator("[data-testid=lang-zh]").click()
        expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    assert_fits(page, "the markets page")
    shot(page, f"{name}-1-markets")

    # Sign up as a buyer: the provider's fields appear only for a provider role.
    page.goto(base + reverse("accounts:signup"))
    provider_fields = page.locator("[data-testid=provider-fields]")
    expect(provider_fields).to_be_hidden()
    page.select_option("select[name=role]", "provider")
    expect(provider_fields).to_be_visible()
    page.select_option("select[name=role]", "buyer")
    expect(provider_fields).to_be_hidden()
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    assert_fits(page, "the signup page")
    shot(page, f"{name}-2-signup")
    page.locator("[data-testid=signup-form] button[type=submit]").click()
    page.wait_for_url(base + "/")

    # Demo funds from the deposit page: a fresh account has nothing to trade with.
    page.goto(base + reverse("funding:deposits"))
    assert_fits(page, "the deposit page")
    with page.expect_navigation():
        page.locator(f"form[action='{reverse('funding:demo-funds')}'] button").click()
    page.goto(base + reverse("web:portfolio"))
    balances = page.locator("[data-testid=portfolio-balances]")
    expect(balances.locator("tr", has_text="CNY")).to_contain_text("10,000.00")
    assert_fits(page, "the portfolio page")
    shot(page, f"{name}-3-portfolio")

    # A limit buy at 8.00 under the 8.20 ask rests on the book.
    page.goto(f"{base}/trade/{SYMBOL}/")
    expect(page.locator("[data-testid=feed-status]")).to_have_attribute("data-status", "live")
    page.fill("#id_price", "8.00")
    page.fill("#id_quantity", "2")
    expect(page.locator("#token-count")).to_have_text("2,000,000")
    expect(page.locator("#pv-notional")).to_have_text("16.00")
    page.locator("#order-submit").click()
    message = page.locator("[data-testid=order-ok]")
    expect(message).to_have_attribute("data-status", "open")
    expect(message.locator("[data-field=status]")).to_have_text(words["open"])
    expect(page.locator("[data-testid=orders-table] tbody tr[data-order-id]")).to_have_count(1)
    expect(page.locator("[data-testid=book-bids] .lvl").first).to_have_attribute("data-price", "8")
    assert_fits(page, "the trade page")
    shot(page, f"{name}-4-order-resting")

    # Another user sells into it: the message turns to filled and a notice announces the fill.
    api(base, seller_key, "POST", "/api/v1/orders",
        {"market": SYMBOL, "side": "sell", "price": "8.00", "quantity": "2"})  # fmt: skip
    expect(message).to_have_attribute("data-status", "filled", timeout=5000)
    expect(message.locator("[data-field=status]")).to_have_text(words["filled"])
    expect(message.locator("[data-field=filled]")).to_have_text("2.000")
    expect(page.locator("[data-testid=fill-notice]").first).to_have_text(words["fill"])
    expect(page.locator("[data-testid=orders-table] tbody tr[data-order-id]")).to_have_count(0)
    expect(page.locator("[data-testid=balance-tokens]")).to_have_text("2.000")
    assert_fits(page, "the trade page after the fill")
    shot(page, f"{name}-5-filled")

    for path in (reverse("web:portfolio"), reverse("accounts:profile"),
                 reverse("accounts:api_keys"), reverse("web:markets")):  # fmt: skip
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        assert_fits(page, path)
    shot(page, f"{name}-6-markets-after")
    console.assert_clean()
    traders = set(Order.objects.filter(market=quiet_market).values_list("user__email", flat=True))
    assert traders == {email, seller.email}
