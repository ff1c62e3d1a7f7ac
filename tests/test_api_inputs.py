"""Strict inputs and distinct error codes across the API (issue 15): an unknown field is refused
by name, a bad cursor or page size is a 400 (not a 404, not ignored), each missing thing has its
own code, and ``details`` is always an object."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from accounts.models import ApiKey
from accounts.services import api_key_create
from exchange.api_errors import exception_handler
from orders.models import Order
from tests.orders.conftest import SYMBOL, _fresh_inline_runner, market  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("market")]


@pytest.fixture
def client(make_user, api_client):
    user = make_user(role="both")
    key = api_key_create(user=user, name="all", scopes=["read", "trade", "keys", "withdraw"])
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    api_client.user = user
    return api_client


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["details"], dict)
    return error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/api-keys", {"name": "k", "scopes": ["read"], "scope": "trade"}),
        (
            "/api/v1/capacity",
            {"market": SYMBOL, "quantity": "1", "available_until": "2030-01-01T00:00:00Z", "x": 1},
        ),
        ("/api/v1/orders/batch", {"orders": [], "x": 1}),
    ],
)
def test_an_unknown_field_in_any_body_is_refused_by_name(client, path, body) -> None:
    keys_before = ApiKey.objects.count()
    unknown = next(name for name in body if name in ("scope", "x"))
    error = error_of(client.post(path, body, format="json"), 400)
    assert error["code"] == "invalid"
    assert error["details"] == {unknown: ["Unknown field."]}
    assert ApiKey.objects.count() == keys_before


def test_a_wrong_type_is_invalid_naming_the_field(client) -> None:
    body = {"market": SYMBOL, "side": "buy", "price": "8", "quantity": "1", "post_only": "maybe"}
    error = error_of(client.post("/api/v1/orders", body, format="json"), 400)
    assert error["code"] == "invalid"
    assert list(error["details"]) == ["post_only"]
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/orders", {"market": SYMBOL, "side": "buy", "price": 8, "quantity": "1"}, "price"),
        (
            "/api/v1/api-keys",
            {"name": "k", "scopes": ["read"], "allowed_models": [0]},
            "allowed_models",
        ),
        ("/api/v1/api-keys", {"name": True, "scopes": ["read"]}, "name"),
    ],
)
def test_a_number_or_boolean_for_text_is_refused(client, path, body, field) -> None:
    keys_before = ApiKey.objects.count()
    error = error_of(client.post(path, body, format="json"), 400)
    assert (error["code"], error["details"]) == ("invalid", {field: ["Not a valid string."]})
    assert ApiKey.objects.count() == keys_before
    assert not Order.objects.exists()


def test_a_missing_body_is_invalid(client) -> None:
    error = error_of(client.post("/api/v1/orders", content_type="application/json"), 400)
    assert error["code"] == "invalid"
    assert "market" in error["details"]


@pytest.mark.parametrize(
    "path", ["/api/v1/orders", "/api/v1/fills", "/api/v1/ledger", "/api/v1/audit-log"]
)
def test_a_bad_cursor_is_a_400_naming_it(client, path) -> None:
    error = error_of(client.get(path, {"cursor": "not-a-cursor"}), 400)
    assert error["code"] == "invalid"
    assert list(error["details"]) == ["cursor"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "100000"])
def test_a_bad_page_size_is_a_400_not_ignored(client, value) -> None:
    error = error_of(client.get("/api/v1/orders", {"limit": value}), 400)
    assert error["code"] == "invalid"
    assert list(error["details"]) == ["limit"]


def test_each_missing_thing_has_its_own_code(client) -> None:
    cases = [
        ("get", "/api/v1/markets/NOPE", "market_not_found", {"market": "NOPE"}),
        ("get", "/api/v1/orders", "market_not_found", {"market": "NOPE"}),
        ("get", "/api/v1/orders/999999", "order_not_found", {"order_id": 999999}),
        ("delete", "/api/v1/orders/999999", "order_not_found", {"order_id": 999999}),
        ("delete", "/api/v1/api-keys/999999", "key_not_found", {"key_id": 999999}),
        ("get", "/api/v1/generations/nope", "generation_not_found", {"generation_id": "nope"}),
        ("get", "/api/v1/no-such-thing", "not_found", {}),
    ]
    for method, path, code, details in cases:
        query = {"market": "NOPE"} if path == "/api/v1/orders" else None
        response = getattr(client, method)(path, query) if query else getattr(client, method)(path)
        error = error_of(response, 404)
        assert (error["code"], error["details"]) == (code, details), path


def test_details_is_an_object_even_for_a_bare_list_of_messages() -> None:
    response = exception_handler(serializers.ValidationError("end must not be before start."), {})
    assert response is not None
    assert response.data["error"]["details"] == {
        "non_field_errors": ["end must not be before start."]
    }
    assert response.data["error"]["message"] == "end must not be before start."
