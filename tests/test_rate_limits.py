"""Rate limits (issue 15): per API key for authenticated callers, per IP address otherwise;
``RateLimit-Limit``/``-Remaining``/``-Reset`` on every answer, ``Retry-After`` on a 429."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from accounts.services import api_key_create
from exchange.api_throttles import AnonRateThrottle, KeyRateThrottle
from tests.orders.conftest import SYMBOL, _fresh_inline_runner, market  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("market")]


@pytest.fixture(autouse=True)
def throttles(monkeypatch, settings) -> None:
    """The served settings' throttles (the test settings turn them off), with small rates."""
    classes = [AnonRateThrottle, KeyRateThrottle]
    monkeypatch.setattr(APIView, "throttle_classes", classes)
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "5/minute"}
    )
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_CLASSES": [f"{c.__module__}.{c.__name__}" for c in classes],
        "DEFAULT_THROTTLE_RATES": {"anon": "3/minute", "user": "5/minute"},
    }
    cache.clear()


def client_with(key: str | None = None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def limits(response) -> tuple[int, int, int]:
    return (
        int(response["RateLimit-Limit"]),
        int(response["RateLimit-Remaining"]),
        int(response["RateLimit-Reset"]),
    )


def test_each_key_has_its_own_budget_with_headers_on_every_answer(make_user) -> None:
    user = make_user()
    first = client_with(api_key_create(user=user, name="a", scopes=["read"]).secret)
    second = client_with(api_key_create(user=user, name="b", scopes=["read"]).secret)
    for remaining in (4, 3, 2, 1, 0):
        response = first.get("/api/v1/orders")
        assert response.status_code == 200
        limit, left, reset = limits(response)
        assert (limit, left) == (5, remaining)
        assert 0 < reset <= 60
    refused = first.get("/api/v1/orders")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 0 < int(refused["Retry-After"]) <= 60
    assert limits(refused)[:2] == (5, 0)
    # the other key of the same user is not held back by the first one's bot
    assert second.get("/api/v1/orders").status_code == 200


def test_a_key_holder_is_not_held_back_by_its_address(make_user) -> None:
    key = api_key_create(user=make_user(), name="bot", scopes=["read"]).secret
    anonymous, holder = client_with(), client_with(key)
    ticker = f"/api/v1/markets/{SYMBOL}/ticker"
    for remaining in (2, 1, 0):
        response = anonymous.get(ticker)
        assert (response.status_code, limits(response)[:2]) == (200, (3, remaining))
    assert anonymous.get(ticker).status_code == 429  # per IP: this address is spent
    response = holder.get(ticker)  # the same address, but counted against the key
    assert (response.status_code, limits(response)[:2]) == (200, (5, 4))


def test_answers_before_the_throttles_carry_the_headers_too(make_user) -> None:
    client_with().get("/api/v1/markets")  # one counted request from this address
    for response in (
        client_with().get("/api/v1/orders"),  # 401: no credentials
        client_with("tx_nope_nope").get("/api/v1/orders"),  # 401: a bad key
        client_with().get("/api/v1/no-such-thing"),  # 404: no route
    ):
        assert response.status_code in (401, 404)
        assert limits(response)[:2] == (3, 2), response  # read, not counted
    reader = api_key_create(user=make_user(), name="r", scopes=["read"]).secret
    refused = client_with(reader).post("/api/v1/orders", {}, format="json")  # 403: scope
    assert refused.status_code == 403
    assert limits(refused)[:2] == (5, 5)


def test_a_made_up_forwarded_for_gets_no_new_budget() -> None:
    client = APIClient()
    statuses = [
        client.get(f"/api/v1/markets/{SYMBOL}/book", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code
        for n in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
