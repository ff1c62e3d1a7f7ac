"""Browser tests: Playwright driving Debian's Chromium against a live uvicorn server with the
embedded engine runner and the Redis channel layer (as tests/marketdata/test_e2e.py does).

They need PostgreSQL, Redis and /usr/bin/chromium (`make test` installs Debian's chromium when it
is missing); a missing one fails the tests. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from accounts.services import api_key_create
from tests.asgi_server import asgi_server
from tests.orders.conftest import SYMBOL

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip
PASSWORD = "a-Strong-pass-123"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# Playwright's sync API runs an event loop in this thread; the ORM calls of the test itself
# (fixtures creating users) are still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists() or shutil.which("node") is None:
        reason = "/usr/bin/chromium or node is missing (`make test` installs chromium)"
        pytest.fail(f"required for browser tests: {reason}", pytrace=False)
    if not (ROOT / "node_modules" / "lightweight-charts").is_dir():
        pytest.fail("node_modules is missing: run `make install` (npm ci)", pytrace=False)


@pytest.fixture
def server(postgres, redis_url):
    _require_chromium()
    with asgi_server(DEMO="0", WS_HEARTBEAT_SECONDS="5") as (base, _port):
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        yield None
        return
    # launch() gives Chromium a fresh temporary profile (--user-data-dir) of its own.
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield instance
        instance.close()


class Console:
    """Collects console errors, page errors and CSP violations of a page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors


def new_page(browser, width: int = 1280, height: int = 900):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(10_000)
    return page, Console(page)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page, base: str, email: str) -> None:
    page.goto(base + "/accounts/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(base + "/")


def api(base: str, key: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        base + path, method=method, data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_place_a_limit_order_see_it_and_cancel_it(server, browser, market, make_user, fund):
    from playwright.sync_api import expect

    user = make_user(email="buyer@example.com", role="buyer", password=PASSWORD)
    fund(user, cny=1000)
    page, console = new_page(browser)
    log_in(page, server, "buyer@example.com")
    page.goto(f"{server}/trade/{SYMBOL}/")
    expect(page.locator("[data-testid=feed-status]")).to_have_attribute("data-status", "live")
    page.fill("#id_price", "7.50")
    page.fill("#id_quantity", "2")
    expect(page.locator("#token-count")).to_have_text("2,000,000")
    # 7.50 × 2 = 15, maker fee 0.1% = 0.015 → 15.015, computed exactly in the browser and shown
    # to the currency's decimals, half to even
    expect(page.locator("#pv-fee")).to_have_text("0.02")
    expect(page.locator("#pv-total")).to_have_text("15.02")
    page.locator("#order-submit").click()
    expect(page.locator("[data-testid=order-ok]")).to_contain_text("Open")
    row = page.locator("[data-testid=orders-table] tbody tr[data-order-id]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("7.5")
    expect(page.locator("[data-testid=balance-quote]")).to_have_text(re.compile(r"^984\.\d\d$"))
    shot(page, "trade-with-open-order")
    row.get_by_role("button").click()
    expect(page.locator("[data-testid=orders-table]")).to_contain_text("No open orders.")
    expect(page.locator("[data-testid=balance-quote]")).to_have_text("1,000.00")
    page.locator("[data-testid=tab-history]").click()
    expect(page.locator("[data-testid=orders-table]")).to_contain_text("Cancelled by you.")
    console.assert_clean()


def test_another_users_trade_reaches_tape_chart_ladder_and_ticker(
    server, browser, market, make_user, fund
):
    from playwright.sync_api import expect

    seller, buyer = make_user(role="provider"), make_user(role="buyer")
    fund(seller, tokens=10_000_000, market=market)
    fund(buyer, cny=1000)
    seller_key = api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret
    buyer_key = api_key_create(user=buyer, name="b", scopes=["read", "trade"]).secret
    page, console = new_page(browser)
    page.goto(f"{server}/trade/{SYMBOL}/")
    expect(page.locator("[data-testid=feed-status]")).to_have_attribute("data-status", "live")
    expect(page.locator("[data-testid=trade-tape] .tr")).to_have_count(0)
    chart = page.locator("[data-testid=price-chart]")
    expect(chart).to_have_attribute("data-candle-count", "0")

    for body, key in (
        ({"side": "sell", "price": "8.20", "quantity": "1"}, seller_key),
        ({"side": "sell", "price": "8.10", "quantity": "2"}, seller_key),
        ({"side": "buy", "price": "7.90", "quantity": "1.5"}, buyer_key),
    ):
        api(server, key, "POST", "/api/v1/orders", {"market": SYMBOL, **body})
    expect(page.locator("[data-testid=book-asks] .lvl")).to_have_count(2, timeout=3000)
    started = time.monotonic()
    api(server, buyer_key, "POST", "/api/v1/orders",
        {"market": SYMBOL, "side": "buy", "price": "8.15", "quantity": "2.5"})  # fmt: skip
    tape = page.locator("[data-testid=trade-tape] .tr")
    expect(tape.first).to_contain_text("8.10", timeout=3000)
    expect(chart).to_have_attribute("data-candle-count", "1", timeout=3000)
    expect(page.locator("[data-testid=ticker-last]")).to_have_text("8.10", timeout=3000)
    elapsed = time.monotonic() - started
    print(f"trade reached tape, chart and ticker in {elapsed:.3f} s")
    assert elapsed < 3
    # The ladder now matches GET /book exactly (prices and quantities, best first).
    book = json.loads(urllib.request.urlopen(f"{server}/api/v1/markets/{SYMBOL}/book").read())
    expect(page.locator("[data-testid=book-bids] .lvl").first).to_have_attribute(
        "data-price", book["bids"][0][0]
    )
    shown_bids = page.locator("[data-testid=book-bids] .lvl")
    shown_asks = page.locator("[data-testid=book-asks] .lvl")
    expect(shown_bids).to_have_count(len(book["bids"]))
    expect(shown_asks).to_have_count(len(book["asks"]))
    bids = [
        [
            shown_bids.nth(i).get_attribute("data-price"),
            shown_bids.nth(i).get_attribute("data-quantity"),
        ]
        for i in range(len(book["bids"]))
    ]
    asks = [  # the ladder shows asks highest first
        [
            shown_asks.nth(i).get_attribute("data-price"),
            shown_asks.nth(i).get_attribute("data-quantity"),
        ]
        for i in reversed(range(len(book["asks"])))
    ]
    assert bids == [level[:2] for level in book["bids"]] == [["8.15", "0.5"], ["7.9", "1.5"]]
    assert asks == [level[:2] for level in book["asks"]] == [["8.2", "1"]]
    shot(page, "trade-live")
    console.assert_clean()


def test_switch_to_simplified_chinese(server, browser, market, make_user):
    from playwright.sync_api import expect

    page, console = new_page(browser)
    page.goto(f"{server}/trade/{SYMBOL}/")
    page.locator("[data-testid=lang-zh]").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.locator(".book-panel h2")).to_have_text("订单簿")
    expect(page.locator(".mainnav")).to_contain_text("市场")
    shot(page, "trade-zh-hans")
    page.locator("[data-testid=lang-en]").click()
    expect(page.locator(".book-panel h2")).to_have_text("Order book")
    console.assert_clean()


def test_every_page_renders_without_console_errors(server, browser, market, make_user, fund):
    user = make_user(email="both@example.com", role="both", password=PASSWORD)
    fund(user, cny=500)
    page, console = new_page(browser)
    for path, name in (("/", "markets"), ("/accounts/signup/", "signup"),
                       ("/accounts/login/", "login")):  # fmt: skip
        page.goto(server + path)
        shot(page, name)
    console.assert_clean()
    response = page.goto(server + "/no-such-page/")
    assert response.status == 404
    shot(page, "404")
    # the document's own 404 status is the one console message there
    assert [e for e in console.errors if "404" not in e] == []
    console.errors.clear()
    log_in(page, server, "both@example.com")
    for path, name in (
        ("/markets/", "markets-logged-in"),
        (f"/trade/{SYMBOL}/", "trade"),
        ("/provider/", "provider"),
        ("/portfolio/", "portfolio"),
        ("/accounts/profile/", "profile"),
        ("/accounts/api-keys/", "api-keys"),
        ("/funding/deposits/", "deposits"),
    ):
        response = page.goto(server + path)
        assert response.status == 200, path
        page.wait_for_load_state("networkidle")
        shot(page, name)
    console.assert_clean()
    # On a 390 px phone no page scrolls sideways, logged out or in (a provider sees every page).
    phone, phone_console = new_page(browser, width=390, height=844)
    pages = [
        ("/", "markets-phone"), ("/accounts/signup/", "signup-phone"),
        ("/accounts/login/", "login-phone"), (f"/trade/{SYMBOL}/", "trade-phone"),
    ]  # fmt: skip
    for path, name in pages:
        phone.goto(server + path)
        phone.wait_for_load_state("networkidle")
        shot(phone, name)
        width = phone.evaluate("() => document.scrollingElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways on a phone ({width}px)"
    log_in(phone, server, "both@example.com")
    pages = [
        (f"/trade/{SYMBOL}/", "trade-phone-logged-in"), ("/provider/", "provider-phone"),
        ("/portfolio/", "portfolio-phone"), ("/accounts/profile/", "profile-phone"),
        ("/accounts/api-keys/", "api-keys-phone"), ("/funding/deposits/", "deposits-phone"),
        ("/funding/payouts/", "payouts-phone"),
    ]  # fmt: skip
    for path, name in pages:
        phone.goto(server + path)
        phone.wait_for_load_state("networkidle")
        shot(phone, name)
        width = phone.evaluate("() => document.scrollingElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways on a phone ({width}px)"
        header = phone.locator("header.topbar").bounding_box()
        assert header["height"] < 70, f"the header of {path} wraps ({header['height']}px)"
    phone_console.assert_clean()


def test_the_browser_formats_numbers_as_the_server_does(server, browser, market):
    """format.js (Intl) and the template filters (babel) give the same text for each kind."""
    from django.utils import translation

    from exchange.web.templatetags import web

    cases = [
        ("price", "12"), ("price", "8.125"), ("price", "1234.5"), ("quantity", "13.2"),
        ("quantity", "2500"), ("quantity", "0.000001"), ("money", "15.015"),
        ("money", "0.025"), ("money", "1234567.5"), ("money", "-984.985"),
        ("percent", "1.5"), ("percent", "-0.25"), ("percent", "0"), ("tokens", "2000000"),
    ]  # fmt: skip
    page, console = new_page(browser)
    for language in ("en", "zh-hans"):
        page.goto(f"{server}/trade/{SYMBOL}/")
        if language != "en":
            page.locator("[data-testid=lang-zh]").click()
        page.wait_for_load_state("networkidle")
        shown = page.evaluate(
            """async (cases) => {
                const f = await import("/static/js/format.js");
                const call = {
                    price: (v) => f.price(v, 2), quantity: (v) => f.quantity(v, 3),
                    money: (v) => f.money(v, "CNY"), percent: f.percent, tokens: f.tokens,
                };
                return cases.map(([kind, value]) => call[kind](value));
            }""",
            cases,
        )
        with translation.override(language):
            server_side = {
                "price": lambda v: web.price(v, market),
                "quantity": lambda v: web.quantity(v, market),
                "money": lambda v: web.money(v, "CNY"),
                "percent": web.percent,
                "tokens": web.thousands,
            }
            expected = [server_side[kind](value) for kind, value in cases]
        assert shown == expected, language
    console.assert_clean()


def test_a_self_trade_prevention_cancel_is_announced_in_words(
    server, browser, market, make_user, fund
):
    from playwright.sync_api import expect

    user = make_user(email="both@example.com", role="both", password=PASSWORD)
    fund(user, cny=1000)
    fund(user, tokens=5_000_000, market=market)
    key = api_key_create(user=user, name="k", scopes=["read", "trade"]).secret
    resting = api(server, key, "POST", "/api/v1/orders",
                  {"market": SYMBOL, "side": "sell", "price": "8.00", "quantity": "1"})  # fmt: skip
    page, console = new_page(browser)
    log_in(page, server, "both@example.com")
    page.goto(f"{server}/trade/{SYMBOL}/")
    expect(page.locator("[data-testid=feed-status]")).to_have_attribute("data-status", "live")
    page.fill("#id_price", "8.00")
    page.fill("#id_quantity", "1")
    page.locator("#order-submit").click()
    # The buy would trade with the user's own sell: the resting sell is cancelled, the buy rests.
    notice = page.locator("[data-testid=order-notice]")
    expect(notice).to_have_text(
        f"Order #{resting['id']}: Cancelled by self-trade prevention: it would have traded with "
        "another order of yours."
    )
    expect(page.locator("[data-testid=order-ok] [data-field=status]")).to_have_text("Open")
    page.locator("[data-testid=tab-history]").click()
    expect(page.locator("[data-testid=orders-table]")).to_contain_text(
        "Cancelled by self-trade prevention"
    )
    expect(page.locator("[data-testid=orders-table]")).not_to_contain_text("(stp)")
    shot(page, "trade-stp-notice")
    console.assert_clean()
