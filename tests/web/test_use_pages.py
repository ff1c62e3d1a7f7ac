"""View tests of the delivery pages: the buyer's Use page (playground, lots, snippet, empty
state), the provider dashboard's delivery section and the portfolio's lots — permissions, CSRF,
exact figures, English and 简体中文. The playground itself is driven in a real browser by
test_use_browser.py."""

# The escrow suite's fixtures are imported by name, so test arguments shadow them.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.middleware.csrf import _unmask_cipher_token
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from exchange.delivery.escrow.models import Lot
from exchange.delivery.escrow.services import (
    escrow_release_due,
    reservation_open,
    reservation_settle,
)
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.ledger.services import fee_for
from tests.delivery.escrow.conftest import (  # noqa: F401  (shared fixtures)
    IN,
    MODEL,
    OUT,
    _fresh_inline_runner,
    make_trader,
    pair,
    provider,
)

pytestmark = pytest.mark.django_db(transaction=True)
USE = "/use/"


def page_of(user, language: str = "en") -> Client:
    client = Client(enforce_csrf_checks=True, headers={"accept-language": language})
    client.force_login(user)
    return client


def config_of(body: str) -> dict:
    found = re.search(r'<script id="use-config" type="application/json">(.*?)</script>', body)
    assert found is not None
    return json.loads(found.group(1))


def text_of(html: str) -> str:
    """The page's text with tags dropped and spaces collapsed, as a reader sees it."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def bought(buyer, quantity: str = "0.01") -> None:
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity=quantity)["status"] == (
        "filled"
    )
    assert buyer.order(market=IN, side="buy", price="2.00", quantity=quantity)["status"] == (
        "filled"
    )


def served(buyer, provider, *, key: str, prompt: int, completion: int, missed: bool = False):
    """A request served from the buyer's lots, as the gateway settles it."""
    reservation = reservation_open(
        user=buyer.user, pair=buyer.pair, provider_id=provider.user.id, input_tokens=prompt,
        output_tokens=completion + 100, key=key,
    )  # fmt: skip
    return reservation_settle(
        reservation_id=reservation.id, input_tokens=prompt, output_tokens=completion,
        sla_missed=missed,
    )  # fmt: skip


def test_use_page_sends_visitors_to_log_in(client: Client) -> None:
    response = client.get(USE)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:login')}?next={USE}"


def test_use_page_refuses_posts(make_user) -> None:
    client = Client()
    client.force_login(make_user())
    assert client.post(USE).status_code == 405


def test_empty_state_links_the_models_markets_and_the_api_keys_page(make_user, pair) -> None:
    body = page_of(make_user()).get(USE).content.decode()
    assert 'data-testid="use-empty"' in body
    assert 'data-testid="playground"' not in body
    assert "No tokens to use yet" in body
    assert f'href="{reverse("web:trade", args=[IN])}"' in body
    assert f'href="{reverse("web:trade", args=[OUT])}"' in body
    # the snippet still shows how to call the exchange from code
    assert 'base_url="http://testserver/v1"' in body
    assert f'href="{reverse("accounts:api_keys")}"' in body
    assert f'<span data-field="snippet-model">{MODEL}</span>' in body
    assert "No lots yet." in body


def test_output_tokens_alone_are_not_enough_to_chat(make_trader, pair, provider) -> None:
    buyer = make_trader(cny=100)
    assert buyer.order(market=OUT, side="buy", price="8.00", quantity="0.01")["status"] == (
        "filled"
    )
    body = page_of(buyer.user).get(USE).content.decode()
    # no playground without input tokens, but the lot is listed
    assert 'data-testid="use-empty"' in body
    assert 'data-testid="playground"' not in body
    assert f'data-market="{OUT}"' in body


def test_buyer_with_lots_gets_the_playground_the_lots_and_a_csrf_token(
    make_trader,
    pair,
    provider,
) -> None:
    buyer = make_trader(cny=100)
    bought(buyer)
    client = page_of(buyer.user)
    response = client.get(USE)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="playground"' in body
    assert f'<option value="{MODEL}" selected>{MODEL}</option>' in body
    config = config_of(body)
    assert config["model"] == MODEL
    assert config["urls"] == {
        "chat": "/v1/chat/completions",
        "models": "/v1/models",
        "generations": "/api/v1/generations",
        "trade": "/trade/SYMBOL/",
    }
    # the token the script sends as X-CSRFToken is the cookie's secret, masked
    cookie = response.cookies["csrftoken"].value
    assert len(cookie) == 32
    assert len(config["csrf_token"]) == 64
    assert _unmask_cipher_token(config["csrf_token"]) == cookie
    # two lots: 10,000 tokens each, nothing drawn yet
    lots = re.findall(r'<tr data-lot-id="\d+" data-market="([^"]+)">', body)
    assert sorted(lots) == [IN, OUT]
    assert body.count('<td class="num" data-field="remaining">10,000</td>') == 2
    assert 'data-testid="nav-use"' in body


def test_lots_partial_shows_the_drop_after_a_request(make_trader, pair, provider) -> None:
    buyer = make_trader(cny=100)
    buyer.pair = pair
    bought(buyer)
    client = page_of(buyer.user)
    served(buyer, provider, key="gen-a", prompt=120, completion=48)
    served(buyer, provider, key="gen-b", prompt=30, completion=20, missed=True)

    # htmx (the script's "allocations-changed") gets the table alone
    partial = client.get(USE, headers={"hx-request": "true"}).content.decode()
    assert partial.lstrip().startswith('<section class="card" id="use-allocations"')
    assert "<html" not in partial
    out_lot = Lot.objects.get(holder=buyer.user, market=pair.output_market)
    in_lot = Lot.objects.get(holder=buyer.user, market=pair.input_market)

    def row(lot: Lot) -> str:
        found = re.search(rf'<tr data-lot-id="{lot.id}".*?</tr>', partial, re.S)
        assert found is not None
        return found.group(0)

    # output: 48 delivered, 20 credited (the miss), 10,000 − 68 remaining
    assert '<td class="num" data-field="delivered">48</td>' in row(out_lot)
    assert '<td class="num" data-field="credited">20</td>' in row(out_lot)
    assert '<td class="num" data-field="remaining">9,932</td>' in row(out_lot)
    assert '<td class="num" data-field="remaining">9,850</td>' in row(in_lot)
    assert f"<td>{out_lot.expires_at.strftime('%Y-%m-%d %H:%M')}</td>" in row(out_lot)


def test_use_page_in_chinese(make_trader, pair, provider) -> None:
    buyer = make_trader(cny=100)
    bought(buyer)
    body = page_of(buyer.user, "zh-hans").get(USE).content.decode()
    assert '<html lang="zh-hans">' in body
    text = text_of(body)
    for words in ("使用你的 token", "试用", "你的批次", "剩余", "从代码调用"):
        assert words in text, words
    config = config_of(body)
    assert config["labels"]["sla_met"] == "达标"
    empty = page_of(make_trader().user, "zh-hans").get(USE).content.decode()
    assert "还没有可用的 token" in text_of(empty)


def test_portfolio_lists_lots_with_delivered_remaining_and_expiry(make_trader, pair, provider):
    buyer = make_trader(cny=100)
    buyer.pair = pair
    bought(buyer)
    served(buyer, provider, key="gen-p", prompt=100, completion=40)
    client = page_of(buyer.user)
    body = client.get(reverse("web:portfolio")).content.decode()
    out_lot = Lot.objects.get(holder=buyer.user, market=pair.output_market)
    found = re.search(rf'<tr data-lot-id="{out_lot.id}".*?</tr>', body, re.S)
    assert found is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", found.group(0), re.S)
    assert [text_of(cell).strip() for cell in cells] == [
        OUT,
        f"Provider #{provider.user.id}",
        "8.00",
        "10,000",
        "40",
        "0",
        "9,960",
        out_lot.expires_at.strftime("%Y-%m-%d %H:%M"),
        "Open",
    ]
    assert f'href="{USE}"' in body


def test_provider_dashboard_shows_deliveries_escrow_released_credits_and_health(
    make_trader,
    pair,
    provider,
) -> None:
    buyer = make_trader(cny=100)
    buyer.pair = pair
    bought(buyer)
    served(buyer, provider, key="gen-1", prompt=500, completion=1000)
    served(buyer, provider, key="gen-2", prompt=250, completion=500, missed=True)
    assert escrow_release_due() == 2  # one payment per market
    now = timezone.now()
    for public_id, prompt, completion, input_cost, output_cost, credit, met in (
        ("gen-1", 500, 1000, 100_000, 800_000, 0, True),
        ("gen-2", 250, 500, 50_000, 400_000, 450_000, False),
    ):
        Generation.objects.create(
            public_id=public_id, buyer=buyer.user, provider=provider.user, model_id=MODEL,
            input_market=pair.input_market, output_market=pair.output_market,
            prompt_tokens=prompt, completion_tokens=completion, currency="CNY",
            input_cost_units=input_cost, output_cost_units=output_cost, credit_units=credit,
            first_token_ms=180, output_tokens_per_second="95.50",
            status=GenerationStatus.COMPLETED, sla_met=met,
            sla_reason="" if met else "first_token", created_at=now - timedelta(seconds=5),
            finished_at=now,
        )  # fmt: skip
    client = page_of(provider.user)
    body = client.get(reverse("web:provider")).content.decode()
    section = re.search(r'id="provider-delivery".*?id="provider-endpoints"', body, re.S)
    assert section is not None, "the delivery section is on the dashboard, before the endpoints"
    text = text_of(section.group(0))

    # escrow per market: out — 1,000 delivered, 500 credited; released 1000 × 8 / MTok = 0.008
    # CNY gross, the maker fee pro rata (ceil), credits 500 × 8 / MTok = 0.004 CNY
    out_fee = fee_for(notional=800_000, rate=pair.output_market.maker_fee_rate)
    out_net = (800_000 - out_fee) / 10**8
    escrow = re.search(rf'<tr data-market="{OUT}".*?</tr>', section.group(0), re.S)
    assert escrow is not None
    cells = [text_of(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", escrow.group(0), re.S)]
    assert cells == [
        OUT, "10,000", "1,000", "500", "0", "8,500", "0.008 CNY", f"{out_net:.6f}".rstrip("0")
        + " CNY", "0.00 CNY", "0.004 CNY", "0.068 CNY",
    ]  # fmt: skip
    # deliveries per model: 2 requests, 1 missed, tokens and credits
    assert re.search(rf"{MODEL} 2 1 750 1,500 0\.0135 CNY 0\.0045 CNY", text), text
    # recent requests and the endpoint's health
    for shown in ("gen-2", "180 ms", "95.5", f"{IN} Healthy", f"{OUT} Healthy"):
        assert shown in text, shown

    # another provider sees none of it; a buyer gets 403
    other = make_trader(role="provider")
    other_body = page_of(other.user).get(reverse("web:provider")).content.decode()
    assert "gen-2" not in other_body
    assert "No deliveries yet." in other_body
    assert page_of(buyer.user).get(reverse("web:provider")).status_code == 403
