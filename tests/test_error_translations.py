"""Order errors speak the reader's language: the web page's, or the API request's; the API's
``code`` stays the same English word for programs."""

from __future__ import annotations

import orjson
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import translation

from accounts.services import api_key_create
from exchange.api_errors import error_body
from exchange.errors import IdempotencyConflict, ValidationFailed
from orders.models import Order
from orders.services import order_request_parse
from orders.units import price_to_ticks
from tests.orders.conftest import SYMBOL, _fresh_inline_runner, market  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def test_an_error_is_rendered_in_the_language_active_where_it_is_read(market) -> None:  # noqa: F811
    with translation.override("en"), pytest.raises(ValidationFailed) as raised:
        price_to_ticks(market, "8.005")
    error = raised.value
    with translation.override("en"):
        assert error.message == "price 8.005 is not a multiple of the tick size 0.01."
    with translation.override("zh-hans"):
        assert error.message == "价格 8.005 不是最小价格变动单位 0.01 的整数倍。"
        # a plain string: the fast path serialises error bodies with orjson
        assert orjson.loads(orjson.dumps(error_body(error.code, error.message))) == {
            "error": {"code": "invalid", "message": error.message, "details": {}}
        }
    with translation.override("zh-hans"):
        assert "幂等键 'k1'" in IdempotencyConflict("k1").message


def web_client(make_user, language: str) -> tuple[Client, object]:
    user = make_user()
    client = Client()
    client.force_login(user)
    client.post(reverse("set_language"), {"language": language, "next": "/"})
    return client, user


@pytest.mark.parametrize(
    ("language", "off_tick", "short"),
    [
        ("en", "is not a multiple of the tick size 0.01", "you have 0 MTok, this needs 1 MTok"),
        (
            "zh-hans",
            "不是最小价格变动单位 0.01 的整数倍",
            "可用余额不足：你有 0 MTok，本次需要 1 MTok",
        ),
    ],
)
def test_order_errors_on_the_trade_page_follow_the_ui_language(
    make_user,
    market,  # noqa: F811
    language,
    off_tick,
    short,
) -> None:
    client, _user = web_client(make_user, language)
    url = reverse("web:order_create", args=[SYMBOL])
    form = {"side": "buy", "type": "limit", "price": "8.005", "quantity": "1"}
    page = client.post(url, form, follow=True).content.decode()
    assert off_tick in page
    # a seller without tokens: the ledger's refusal, in MTok as the page speaks
    form = {"side": "sell", "type": "limit", "price": "8.00", "quantity": "1"}
    page = client.post(url, form, follow=True).content.decode()
    assert short in page
    assert "tokens <" not in page
    assert not Order.objects.exists()


def test_api_error_code_stays_english_and_the_message_follows_accept_language(
    make_user,
    market,  # noqa: F811
) -> None:
    user = make_user()
    key = api_key_create(user=user, name="bot", scopes=["read", "trade"]).secret
    body = {"market": SYMBOL, "side": "buy", "price": "8.005", "quantity": "1"}
    answers = {}
    for language in ("en", "zh-hans"):
        response = Client().post(
            "/api/v1/orders", body, content_type="application/json",
            headers={"Authorization": f"Bearer {key}", "Accept-Language": language},
        )  # fmt: skip
        assert response.status_code == 400
        answers[language] = response.json()["error"]
    assert answers["en"]["code"] == answers["zh-hans"]["code"] == "invalid"
    assert answers["en"]["details"] == answers["zh-hans"]["details"] == {"price": "off_tick"}
    assert answers["en"]["message"] == "price 8.005 is not a multiple of the tick size 0.01."
    assert answers["zh-hans"]["message"] == "价格 8.005 不是最小价格变动单位 0.01 的整数倍。"


def test_service_errors_are_lazy_until_read(market) -> None:  # noqa: F811
    """Raised under one language, read under another: the reader's wins."""
    with translation.override("zh-hans"), pytest.raises(ValidationFailed) as raised:
        order_request_parse(market=market, side="buy", type="limit", price=None, quantity="1")
    with translation.override("en"):
        assert raised.value.message == "A limit order needs a price."
