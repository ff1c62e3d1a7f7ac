"""The Chinese (zh-hans) UI is complete: the catalogue has no untranslated or fuzzy entry and
its compiled .mo matches it, and the pages a user with both roles sees show no English UI
words — the role and region choices, listing, endpoint, deposit and API-key statuses, the
delivery endpoints and provider health sections, the Use page, the demo funds offer."""

# The escrow suite's fixtures are imported by name, so test arguments shadow them.
# ruff: noqa: F811

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from accounts.funding.models import Deposit
from accounts.services import api_key_create
from exchange.delivery.endpoints.models import Endpoint, HealthStatus
from orders.capacity import capacity_list
from tests.delivery.endpoints.helpers import live_endpoint
from tests.delivery.escrow.conftest import (  # noqa: F401  (shared fixtures)
    IN,
    OUT,
    _fresh_inline_runner,
    make_trader,
    pair,
    provider,
)

CATALOGUE = Path(django_settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES"
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\w+\}")


def _catalogue():
    with open(CATALOGUE / "django.po", "rb") as po_file:
        return read_po(po_file)


def test_every_entry_of_the_catalogue_is_translated_and_none_is_fuzzy() -> None:
    catalogue = _catalogue()
    untranslated = [(m.context, m.id) for m in catalogue if m.id and not m.string]
    fuzzy = [(m.context, m.id) for m in catalogue if m.id and m.fuzzy]
    assert untranslated == []
    assert fuzzy == []


def test_translations_keep_their_placeholders() -> None:
    wrong = [
        (m.id, m.string)
        for m in _catalogue()
        if m.id and sorted(PLACEHOLDER.findall(m.id)) != sorted(PLACEHOLDER.findall(m.string))
    ]
    assert wrong == []


def test_the_compiled_catalogue_is_up_to_date() -> None:
    with open(CATALOGUE / "django.mo", "rb") as mo_file:
        compiled = {(m.context, m.id): m.string for m in read_mo(mo_file) if m.id}
    source = {(m.context, m.id): m.string for m in _catalogue() if m.id}
    assert compiled == source


def visible_text(html: str) -> str:
    """What a reader sees: scripts, styles and code samples dropped, then tags; spaces collapsed."""
    html = re.sub(r"<(script|style|pre|code)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _shows(text: str, words: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(words)}(?![\w-])", text) is not None


@pytest.fixture
def both(make_trader, pair, provider, settings):
    """A user with both roles: an endpoint per market (one failing), a listing, lots bought
    from the provider, a pending deposit and a consume key with limits; demo funds on offer."""
    settings.DEMO = True
    trader = make_trader(role="both", cny=100)
    live_endpoint(trader.user, pair.output_market)
    failing = live_endpoint(trader.user, pair.input_market)
    Endpoint.objects.filter(pk=failing.pk).update(status=HealthStatus.FAILING)
    # no ask price: the user's own sell order would be in the way of its purchases
    capacity_list(
        user=trader.user, market=pair.output_market, quantity="1",
        available_until=timezone.now() + timedelta(days=1),
    )  # fmt: skip
    for symbol, price in ((OUT, "8.00"), (IN, "2.00")):
        order = trader.order(market=symbol, side="buy", price=price, quantity="0.01")
        assert order["status"] == "filled"
    Deposit.objects.create(user=trader.user, currency="CNY", amount=10**8)
    api_key_create(
        user=trader.user, name="chat", scopes=["consume"],
        limits={"requests_per_minute": 60, "tokens_per_day": 100_000, "allowed_models": ["m"]},
    )  # fmt: skip
    return trader.user


# Per page: the English the page showed before (or would show untranslated), and the Chinese
# it shows instead.
PAGES = {
    "/accounts/profile/": (
        ["Provider and buyer", "Buyer", "China North", "Asia Pacific Southeast", "US West"],
        ["供应商兼买家", "买家", "华北", "亚太东南", "美国西部"],
    ),
    "/provider/": (
        ["Delivery endpoints", "Base URL", "Concurrency", "Healthy", "Failing",
         "Register an endpoint", "Check and register", "Remove", "Upstream model id", "Active"],
        ["交付端点", "基础 URL", "并发数", "正常", "异常", "注册端点", "检查并注册", "有效"],
    ),
    f"/trade/{OUT}/": (
        ["Providers", "Health", "Uptime 5 min", "30 min", "1 day", "TTFT p50 / p90 (ms)",
         "Tokens/s p50 / p90", "Healthy"],
        ["5 分钟可用率", "首 token 时间 p50 / p90（毫秒）", "token/秒 p50 / p90", "正常"],
    ),
    "/use/": (
        ["Use your tokens", "Playground", "Your lots", "Open", "From code", "New chat"],
        ["使用你的 token", "试用", "你的批次", "从代码调用"],
    ),
    "/funding/deposits/": (
        ["Demo funds", "Get demo funds", "My deposits", "Pending"],
        ["模拟资金", "领取模拟资金", "待确认"],
    ),
    "/accounts/api-keys/": (
        ["Tokens per day", "Requests per minute", "Allowed models", "req/min", "tok/day",
         "models", "Active"],
        ["每日 token 上限", "次请求/分钟", "token/天", "有效"],
    ),
}  # fmt: skip
# Status codes that were shown raw: in either language the page shows the status in words.
CODES = {"/provider/": "active", "/funding/deposits/": "pending", "/accounts/api-keys/": "active"}


def _english_of_the_catalogue() -> list[str]:
    """The catalogue's English phrases of two words or more whose Chinese differs: shown as
    they are, they were left untranslated where the page renders them."""
    return [
        m.id
        for m in _catalogue()
        if isinstance(m.id, str) and " " in m.id.strip() and m.string != m.id
        and not PLACEHOLDER.search(m.id)
    ]  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", list(PAGES))
def test_pages_of_a_provider_and_buyer_show_no_english_in_chinese(both, url: str) -> None:
    english, chinese = PAGES[url]
    client = Client(headers={"accept-language": "zh-hans"})
    client.force_login(both)

    response = client.get(url)

    assert response.status_code == 200
    body = response.content.decode()
    assert '<html lang="zh-hans">' in body
    text = visible_text(body)
    assert [words for words in english if _shows(text, words)] == []
    assert not _shows(text, CODES.get(url, "no status code"))
    assert [words for words in chinese if not _shows(text, words)] == []
    assert [words for words in _english_of_the_catalogue() if _shows(text, words)] == []


@pytest.mark.django_db(transaction=True)
def test_the_same_pages_in_english_show_the_english_words(both) -> None:
    """The words above are the ones these pages really show: in English they are there."""
    client = Client(headers={"accept-language": "en"})
    client.force_login(both)
    for url, (english, _chinese) in PAGES.items():
        text = visible_text(client.get(url).content.decode())
        assert [words for words in english if _shows(text, words)] == english, url
        assert not _shows(text, CODES.get(url, "no status code")), url
