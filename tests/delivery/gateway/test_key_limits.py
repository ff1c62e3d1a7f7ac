"""A ``consume`` key's limits are set through the API and the API-keys page, and checked."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


def test_limits_are_created_with_a_consume_key(make_user):
    user = make_user()
    api = APIClient()
    api.force_authenticate(user)

    created = api.post(
        "/api/v1/api-keys",
        {
            "name": "agent",
            "scopes": ["consume"],
            "tokens_per_day": 100_000,
            "requests_per_minute": 30,
            "allowed_models": [" Qwen3.6-Plus ", "deepseek-v3.2"],
        },
        format="json",
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["scopes"] == ["consume"]
    assert (body["tokens_per_day"], body["requests_per_minute"]) == (100_000, 30)
    assert (body["tokens_per_month"], body["tokens_per_minute"]) == (None, None)
    assert body["allowed_models"] == ["deepseek-v3.2", "qwen3.6-plus"]


@pytest.mark.parametrize(
    "limits",
    [{"tokens_per_day": 0}, {"requests_per_minute": -1}, {"allowed_models": "qwen3.6-plus"}],
)
def test_bad_limits_are_refused_and_nothing_is_created(make_user, limits):
    user = make_user()
    api = APIClient()
    api.force_authenticate(user)

    refused = api.post(
        "/api/v1/api-keys", {"name": "agent", "scopes": ["consume"], **limits}, format="json"
    )

    assert refused.status_code == 400
    assert not ApiKey.objects.filter(user=user).exists()


def test_the_api_keys_page_sets_limits(client, make_user):
    user = make_user()
    client.force_login(user)

    page = client.post(
        "/accounts/api-keys/",
        {
            "name": "agent",
            "scopes": ["consume"],
            "tokens_per_minute": "5000",
            "allowed_models": "qwen3.6-plus, deepseek-v3.2",
        },
    )

    assert page.status_code == 200
    key = ApiKey.objects.get(user=user)
    assert key.tokens_per_minute == 5000
    assert key.allowed_models == ["deepseek-v3.2", "qwen3.6-plus"]
    assert "5,000 tok/min" in page.content.decode()
