"""The whole delivery loop in a real browser: a buyer buys tokens of a model's input and output
markets in the UI (against asks a provider placed through the services, the provider's endpoint
being the demo upstream served by the same uvicorn), opens Use, chats in the playground, and
sees the reply stream in, its cost and the lots drop by exactly what the gateway drew; the
provider's dashboard shows the delivery. A request without the CSRF header draws nothing.

Fixtures as in test_browser.py (live uvicorn with the embedded runner, Debian's Chromium).
Screenshots go to test-artifacts/use-*.png.
"""

# The escrow suite's fixtures are imported by name, so test arguments shadow them.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import io
import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.services import api_key_create, profile_update
from exchange.delivery.endpoints.crypto import secret_encrypt
from exchange.delivery.endpoints.models import Endpoint, HealthStatus
from exchange.delivery.escrow.models import Lot
from exchange.delivery.gateway.models import Generation, GenerationStatus
from orders.capacity import capacity_list
from orders.models import Order
from tests.asgi_server import asgi_server
from tests.delivery.escrow.conftest import IN, MODEL, OUT, pair  # noqa: F401  (fixture)
from tests.web.test_browser import PASSWORD, _require_chromium, browser, log_in, new_page, shot
from tests.web.test_newcomer import assert_fits

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
__all__ = ["browser"]  # the shared Chromium fixture, imported for pytest to find

# Fast enough for a quick test, slow enough that the reply visibly streams.
BEHAVIOUR = "ttft=150,tps=60,len=24"
LOT = 10_000  # 0.01 MTok


@pytest.fixture
def delivery_server(postgres, redis_url, settings):
    """The exchange with the demo upstream mounted (DEMO_UPSTREAM=1) and its own runner; this
    process only journals (the server's runner matches everything, the browser's orders and
    the provider's asks alike)."""
    _require_chromium()
    settings.ENGINE_RUNNER = "external"
    with asgi_server(DEMO="0", DEMO_UPSTREAM="1", WS_HEARTBEAT_SECONDS="5") as (base, _port):
        yield base


def provider_with_asks(base: str, make_user, pair):
    """A provider whose endpoints (both markets) are the demo upstream, asking 2.00 CNY/MTok for
    input and 8.00 for output, its asks resting on the server's books."""
    provider = make_user(email="alpha@example.com", role="provider", password=PASSWORD)
    profile_update(user=provider, display_name="Alpha Cloud")
    now = timezone.now()
    for market in pair.markets:
        Endpoint.objects.create(
            provider=provider, market=market, base_url=f"{base}/demo-upstream/p/{BEHAVIOUR}/v1",
            api_key_ciphertext=secret_encrypt("demo-upstream-key"), model_id="exchange-demo",
            concurrency_limit=8, status=HealthStatus.HEALTHY, last_checked_at=now,
            last_success_at=now,
        )  # fmt: skip
    until = now + timedelta(days=2)
    capacity_list(user=provider, market=pair.input_market, quantity="1", available_until=until,
                  ask_price="2.00")  # fmt: skip
    capacity_list(user=provider, market=pair.output_market, quantity="1", available_until=until,
                  ask_price="8.00")  # fmt: skip
    deadline = time.monotonic() + 20
    while Order.objects.filter(user=provider, status="open").count() < 2:
        assert time.monotonic() < deadline, "the server's runner did not rest the asks"
        time.sleep(0.1)
    return provider


def buy_in_the_ui(page, base: str, symbol: str, price: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/trade/{symbol}/")
    expect(page.locator("[data-testid=feed-status]")).to_have_attribute("data-status", "live")
    page.fill("#id_price", price)
    page.fill("#id_quantity", "0.01")
    expect(page.locator("#token-count")).to_have_text("10,000")
    page.locator("#order-submit").click()
    expect(page.locator("[data-testid=order-ok]")).to_have_attribute("data-status", "filled")
    expect(page.locator("[data-testid=balance-tokens]")).to_have_text("0.010")


def money_text(units: int) -> str:
    """What format.js shows for an exact amount of CNY: two decimals at least, every ledger
    digit beyond them."""
    value = Decimal(units).scaleb(-8).normalize()
    text = format(value, "f")
    whole, _, fraction = text.partition(".")
    return f"{int(whole):,}.{fraction.ljust(2, '0')} CNY"


def remaining(page, symbol: str):
    return page.locator(f"[data-testid=use-lots] tr[data-market='{symbol}'] [data-field=remaining]")


def test_buy_in_the_ui_chat_in_the_playground_see_cost_and_lots_drop(
    delivery_server, browser, make_user, fund, pair
):
    from playwright.sync_api import expect

    base = delivery_server
    provider = provider_with_asks(base, make_user, pair)
    buyer = make_user(email="buyer@example.com", role="buyer", password=PASSWORD)
    fund(buyer, cny=100)
    page, console = new_page(browser)
    log_in(page, base, buyer.email)

    # Before buying: the Use page says what is missing and links the model's markets.
    page.locator("[data-testid=nav-use]").click()
    page.wait_for_url(base + reverse("web:use"))
    empty = page.locator("[data-testid=use-empty]")
    expect(empty).to_be_visible()
    expect(empty.locator(f"a[href='/trade/{IN}/']")).to_be_visible()
    expect(empty.locator(f"a[href='/trade/{OUT}/']")).to_be_visible()
    expect(page.locator("[data-testid=snippet-code]")).to_contain_text(f'base_url="{base}/v1"')
    shot(page, "use-1-empty")

    # Buy 0.01 MTok of each market in the trade page's form.
    buy_in_the_ui(page, base, IN, "2.00")
    buy_in_the_ui(page, base, OUT, "8.00")
    lots = {lot.market.symbol: lot for lot in Lot.objects.filter(holder=buyer)}
    assert {symbol: lot.bought_tokens for symbol, lot in lots.items()} == {IN: LOT, OUT: LOT}
    assert {lot.provider_id for lot in lots.values()} == {provider.id}

    # The playground: the model from /v1/models with what is available.
    page.locator("[data-testid=nav-use]").click()
    playground = page.locator("[data-testid=playground]")
    expect(playground).to_be_visible()
    expect(page.locator("[data-testid=model-select]")).to_have_value(MODEL)
    expect(page.locator("[data-testid=model-info]")).to_contain_text(
        "Available: 10,000 input and 10,000 output tokens from 1 provider(s)"
    )
    expect(remaining(page, IN)).to_have_text("10,000")
    expect(remaining(page, OUT)).to_have_text("10,000")
    shot(page, "use-2-playground")

    # Chat: the reply streams in, then its tokens, cost, timings and the lots' drop.
    page.fill("[data-testid=prompt]", "Hello exchange! What are you?")
    page.locator("[data-testid=send]").click()
    reply = page.locator("[data-testid=message-assistant]").last
    # streaming: the first words are shown before the reply is complete
    expect(reply.locator(".message-text")).to_contain_text("[DEMO]")
    expect(reply).to_have_attribute("data-status", "done", timeout=15_000)
    generation = Generation.objects.get(buyer=buyer)
    assert generation.status == GenerationStatus.COMPLETED
    assert generation.provider_id == provider.id
    assert generation.completion_tokens == 24
    assert generation.sla_met is True
    expect(reply.locator(".message-text")).to_have_text(re.compile(r"^\[DEMO\] This reply comes"))
    stats = reply.locator("[data-testid=reply-stats]")
    expect(stats.locator("[data-field=prompt_tokens]")).to_have_text(
        f"{generation.prompt_tokens:,}"
    )
    expect(stats.locator("[data-field=completion_tokens]")).to_have_text("24")
    expect(stats.locator("[data-field=input_market]")).to_have_text(IN)
    expect(stats.locator("[data-field=output_market]")).to_have_text(OUT)
    # 24 completion tokens at 8 CNY/MTok = 0.000192 CNY, the prompt at 2 CNY/MTok
    assert generation.output_cost_units == 24 * 800
    assert generation.input_cost_units == generation.prompt_tokens * 200
    expect(stats.locator("[data-testid=reply-cost]")).to_have_text(
        money_text(generation.cost_units)
    )
    expect(stats.locator("[data-field=output_cost]")).to_have_text(money_text(24 * 800))
    expect(stats.locator("[data-field=first_token]")).to_have_text(
        f"{generation.first_token_ms:,} ms"
    )
    expect(stats.locator("[data-field=tokens_per_second]")).to_have_text(
        re.compile(r"^\d[\d,]*\.\d$")
    )
    # the provider's routing name (what a request's "provider" object takes)
    expect(stats.locator("[data-field=provider]")).to_have_text("alpha-cloud")
    expect(stats.locator("[data-field=sla]")).to_have_text("met")
    expect(stats.locator("[data-field=generation_id]")).to_have_text(generation.public_id)
    # the lots dropped by exactly what was drawn (the table refreshed itself after the reply)
    expect(remaining(page, OUT)).to_have_text(f"{LOT - 24:,}")
    expect(remaining(page, IN)).to_have_text(f"{LOT - generation.prompt_tokens:,}")
    expect(page.locator("[data-testid=model-info]")).to_contain_text(
        f"Available: {LOT - generation.prompt_tokens:,} input and {LOT - 24:,} output tokens"
    )
    shot(page, "use-3-reply")

    # A second turn carries the conversation (the prompt grows by the first exchange).
    page.fill("[data-testid=prompt]", "And again?")
    page.keyboard.press("Enter")
    second = page.locator("[data-testid=message-assistant]").nth(1)
    expect(second).to_have_attribute("data-status", "done", timeout=15_000)
    first, later = Generation.objects.filter(buyer=buyer).order_by("id")
    assert later.prompt_tokens > first.prompt_tokens
    expect(remaining(page, OUT)).to_have_text(f"{LOT - 48:,}")
    assert_fits(page, "the use page")
    shot(page, "use-4-second-turn")
    console.assert_clean()

    # A request without the CSRF header is refused and draws nothing (after the console check:
    # the browser logs the 403).
    refused = page.evaluate(
        """async (model) => {
            const response = await fetch("/v1/chat/completions", {
                method: "POST", headers: {"Content-Type": "application/json"},
                body: JSON.stringify({model, messages: [{role: "user", content: "hi"}]}),
            });
            return [response.status, (await response.json()).error.code];
        }""",
        MODEL,
    )
    assert refused == [403, "csrf_failed"]
    assert Generation.objects.filter(buyer=buyer).count() == 2
    page.reload()
    expect(remaining(page, OUT)).to_have_text(f"{LOT - 48:,}")

    # A reply whose worst case exceeds the lots is refused with the numbers, nothing drawn.
    page.fill("[data-testid=max-tokens]", "20000")
    page.fill("[data-testid=prompt]", "A long answer, please.")
    page.locator("[data-testid=send]").click()
    refusal = page.locator("[data-testid=message-assistant]").last
    expect(refusal).to_have_attribute("data-status", "failed")
    expect(refusal.locator("[data-testid=reply-error]")).to_contain_text(
        re.compile(rf"20000 output tokens.* {LOT - 48} output tokens.*\(insufficient_allocation\)$")
    )
    expect(refusal.locator("[data-testid=reply-stats]")).to_have_count(0)
    expect(remaining(page, OUT)).to_have_text(f"{LOT - 48:,}")
    shot(page, "use-4b-refused")
    page.fill("[data-testid=max-tokens]", "256")

    # The snippet, run as shown with a key of scope "consume", gets a reply the same way.
    snippet = page.locator("[data-testid=snippet-code]").inner_text()
    key = api_key_create(user=buyer, name="agent", scopes=["consume"]).secret
    assert 'api_key="tx_…"' in snippet
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet.replace('api_key="tx_…"', f'api_key="{key}"'), {})  # noqa: S102
    assert printed.getvalue().startswith("[DEMO] This reply comes from")
    from_code = Generation.objects.filter(buyer=buyer, api_key__isnull=False).get()
    assert (from_code.status, from_code.completion_tokens) == (GenerationStatus.COMPLETED, 24)
    # the last chunk's usage, printed: OpenAI's counts and the exchange's cost
    assert "completion_tokens=24" in printed.getvalue()
    assert "cost='0.000" in printed.getvalue()

    # The portfolio lists the lots with what was delivered.
    page.goto(base + reverse("web:portfolio"))
    out_row = page.locator(f"[data-testid=allocations] tr[data-lot-id='{lots[OUT].id}']")
    expect(out_row).to_contain_text(f"{LOT - 72:,}")

    # On a phone, in Chinese: the same page, no sideways scroll.
    phone, phone_console = new_page(browser, width=390, height=844)
    log_in(phone, base, buyer.email)
    phone.locator("[data-testid=menu-button]").click()
    phone.locator("[data-testid=lang-zh]").click()
    expect(phone.locator("html")).to_have_attribute("lang", "zh-hans")
    phone.goto(base + reverse("web:use"))
    expect(phone.locator("h1")).to_have_text("使用你的 token")
    expect(phone.locator("[data-testid=model-info]")).to_contain_text("可用：")
    assert_fits(phone, "the use page on a phone")
    shot(phone, "use-5-phone-zh")
    phone_console.assert_clean()

    # The provider's dashboard: the deliveries, and escrow still to release (the beat task's).
    provider_page, provider_console = new_page(browser)
    log_in(provider_page, base, provider.email)
    provider_page.goto(base + reverse("web:provider"))
    delivery = provider_page.locator("[data-testid=provider-delivery]")
    expect(delivery.locator("[data-testid=delivery-models]")).to_contain_text(MODEL)
    expect(delivery.locator("[data-testid=delivery-recent] tbody tr")).to_have_count(3)
    out_escrow = delivery.locator(f"[data-testid=delivery-escrow] tr[data-market='{OUT}'] td")
    # sold 10,000, delivered 72 (3 × 24), due at the next release: 72 × 8 CNY/MTok
    expect(out_escrow.nth(1)).to_have_text("10,000")
    expect(out_escrow.nth(2)).to_have_text("72")
    expect(out_escrow.nth(8)).to_have_text(money_text(72 * 800))
    delivery.scroll_into_view_if_needed()
    shot(provider_page, "use-6-provider")
    provider_console.assert_clean()
