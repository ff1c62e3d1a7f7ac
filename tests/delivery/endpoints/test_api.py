"""Provider endpoints API: registration checked against a real upstream, the key write-only,
permissions, updates and deletion."""

from __future__ import annotations

import logging

import pytest

from exchange.delivery.endpoints.crypto import secret_decrypt
from exchange.delivery.endpoints.models import Endpoint, HealthStatus
from exchange.delivery.endpoints.upstream import CHECK_FAILED
from tests.delivery.endpoints.conftest import OUT
from tests.delivery.endpoints.upstream_server import UPSTREAM_KEY

pytestmark = pytest.mark.django_db

URL = "/api/v1/provider/endpoints"


def body(upstream, **overrides) -> dict:
    return {
        "market": OUT,
        "base_url": upstream.base_url,
        "api_key": UPSTREAM_KEY,
        "model_id": "qwen3.6-plus",
        "concurrency_limit": 4,
        **overrides,
    }


def test_registers_after_the_upstream_lists_the_model(market, upstream, client_for) -> None:
    provider = client_for("provider")

    response = provider.post(URL, body(upstream), format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["market"] == OUT
    assert data["base_url"] == upstream.base_url
    assert (data["model_id"], data["concurrency_limit"], data["status"]) == (
        "qwen3.6-plus",
        4,
        "healthy",
    )
    assert "api_key" not in data
    assert "api_key_ciphertext" not in data
    # A real request reached the upstream, with the key.
    assert upstream.behaviour.seen == [("GET", "/v1/models", f"Bearer {UPSTREAM_KEY}")]
    endpoint = Endpoint.objects.get()
    assert endpoint.provider == provider.user
    assert UPSTREAM_KEY not in endpoint.api_key_ciphertext
    assert secret_decrypt(endpoint.api_key_ciphertext) == UPSTREAM_KEY


def test_trailing_slash_is_dropped_from_the_base_url(market, upstream, client_for) -> None:
    provider = client_for("provider")
    response = provider.post(URL, body(upstream, base_url=upstream.base_url + "/"), format="json")
    assert response.status_code == 201
    assert Endpoint.objects.get().base_url == upstream.base_url


@pytest.mark.parametrize(
    "overrides",
    [
        {"api_key": "sk-wrong"},
        {"model_id": "missing-model"},
        {"base_url": "http://127.0.0.1:1/v1"},
    ],
)
def test_refuses_with_one_generic_error_and_stores_nothing(
    market, upstream, client_for, overrides, caplog
) -> None:
    """A refused key, an unlisted model and a closed port get the same answer (the check must
    not tell them apart for whoever saves the endpoint); the server log says which."""
    caplog.set_level(logging.INFO, logger="exchange.delivery.endpoints.upstream")
    provider = client_for("provider")

    response = provider.post(URL, body(upstream, **overrides), format="json")

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "endpoint_check_failed"
    assert error["message"] == CHECK_FAILED
    assert error.get("details") == {"base_url": "check_failed"}
    assert Endpoint.objects.count() == 0
    assert "endpoint check of" in caplog.text


def test_a_refused_check_echoes_nothing_the_upstream_listed(market, upstream, client_for) -> None:
    response = client_for("provider").post(URL, body(upstream, model_id="nope"), format="json")
    assert response.status_code == 422
    text = response.content.decode()
    assert "qwen3.6-plus" not in text
    assert "other-model" not in text


def test_refuses_a_url_with_credentials_or_another_scheme(market, upstream, client_for) -> None:
    provider = client_for("provider")
    for url in ("ftp://127.0.0.1/v1", "http://user:pw@127.0.0.1:1/v1"):
        response = provider.post(URL, body(upstream, base_url=url), format="json")
        assert response.status_code == 400, url
    assert Endpoint.objects.count() == 0
    assert upstream.behaviour.seen == []


def test_one_endpoint_per_market(market, upstream, client_for) -> None:
    provider = client_for("provider")
    assert provider.post(URL, body(upstream), format="json").status_code == 201
    response = provider.post(URL, body(upstream), format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "endpoint_exists"
    assert Endpoint.objects.count() == 1


def test_buyer_gets_403_and_a_key_without_trade_too(market, upstream, client_for) -> None:
    buyer = client_for("buyer")
    assert buyer.get(URL).status_code == 403
    assert buyer.post(URL, body(upstream), format="json").status_code == 403
    read_only = client_for("provider", scopes=("read",))
    assert read_only.get(URL).status_code == 403
    assert read_only.post(URL, body(upstream), format="json").status_code == 403
    assert Endpoint.objects.count() == 0
    assert upstream.behaviour.seen == []


def test_another_providers_endpoint_is_not_found(market, upstream, client_for) -> None:
    owner, other = client_for("provider"), client_for("provider")
    endpoint_id = owner.post(URL, body(upstream), format="json").json()["id"]

    assert other.get(f"{URL}/{endpoint_id}").status_code == 404
    assert (
        other.patch(f"{URL}/{endpoint_id}", {"concurrency_limit": 1}, format="json").status_code
        == 404
    )
    assert other.delete(f"{URL}/{endpoint_id}").status_code == 404
    assert other.get(URL).json() == []

    endpoint = Endpoint.objects.get()
    assert endpoint.concurrency_limit == 4
    assert owner.get(f"{URL}/{endpoint_id}").json()["id"] == endpoint_id


def test_update_checks_a_new_key_and_keeps_the_old_one_on_refusal(
    market, upstream, client_for
) -> None:
    provider = client_for("provider")
    endpoint_id = provider.post(URL, body(upstream), format="json").json()["id"]
    before = Endpoint.objects.get().api_key_ciphertext

    refused = provider.patch(f"{URL}/{endpoint_id}", {"api_key": "sk-other"}, format="json")
    assert refused.status_code == 422
    assert Endpoint.objects.get().api_key_ciphertext == before

    upstream.behaviour.api_key = "sk-rotated-upstream-key"
    accepted = provider.patch(
        f"{URL}/{endpoint_id}", {"api_key": "sk-rotated-upstream-key"}, format="json"
    )
    assert accepted.status_code == 200
    assert secret_decrypt(Endpoint.objects.get().api_key_ciphertext) == "sk-rotated-upstream-key"


def test_update_of_the_model_id_is_checked_with_the_stored_key(
    market, upstream, client_for
) -> None:
    provider = client_for("provider")
    endpoint_id = provider.post(URL, body(upstream), format="json").json()["id"]
    upstream.behaviour.seen.clear()

    response = provider.patch(f"{URL}/{endpoint_id}", {"model_id": "other-model"}, format="json")

    assert response.status_code == 200
    assert response.json()["model_id"] == "other-model"
    assert upstream.behaviour.seen == [("GET", "/v1/models", f"Bearer {UPSTREAM_KEY}")]


def test_concurrency_change_alone_makes_no_request(market, upstream, client_for) -> None:
    provider = client_for("provider")
    endpoint_id = provider.post(URL, body(upstream), format="json").json()["id"]
    upstream.behaviour.seen.clear()
    response = provider.patch(f"{URL}/{endpoint_id}", {"concurrency_limit": 32}, format="json")
    assert response.json()["concurrency_limit"] == 32
    assert upstream.behaviour.seen == []
    bad = provider.patch(f"{URL}/{endpoint_id}", {"concurrency_limit": 0}, format="json")
    assert bad.status_code == 400
    assert Endpoint.objects.get().concurrency_limit == 32


def test_delete_removes_the_endpoint(market, upstream, client_for) -> None:
    provider = client_for("provider")
    endpoint_id = provider.post(URL, body(upstream), format="json").json()["id"]
    response = provider.delete(f"{URL}/{endpoint_id}")
    assert response.status_code == 200
    assert response.json() == {"deleted": endpoint_id, "cancelled_order_ids": []}
    assert Endpoint.objects.count() == 0


def test_the_key_is_in_no_response_and_no_log(market, upstream, client_for, caplog) -> None:
    """Every endpoint-related response and log line, across create, read, update, a refused
    update, probes (ok and failing), events and the public statistics, without the key."""
    from exchange.delivery.endpoints.services import endpoints_probe

    caplog.set_level(logging.DEBUG)
    provider = client_for("provider")
    bodies = []
    created = provider.post(URL, body(upstream), format="json")
    endpoint_id = created.json()["id"]
    bodies += [created, provider.get(URL), provider.get(f"{URL}/{endpoint_id}")]
    bodies.append(provider.patch(f"{URL}/{endpoint_id}", {"api_key": "sk-not-it"}, format="json"))
    bodies.append(provider.patch(f"{URL}/{endpoint_id}", {"api_key": UPSTREAM_KEY}, format="json"))
    endpoints_probe()
    upstream.behaviour.fail = True
    endpoints_probe()
    bodies += [provider.get(f"{URL}/events"), provider.get(f"/api/v1/markets/{OUT}/providers")]
    bodies.append(provider.get("/api/schema/"))
    assert Endpoint.objects.get().status == HealthStatus.FAILING

    for response in bodies:
        assert response.status_code in (200, 201, 422)
        assert UPSTREAM_KEY not in response.content.decode()
        assert "sk-not-it" not in response.content.decode()
    assert caplog.records  # something was logged (requests, the probe failure)
    for record in caplog.records:
        assert UPSTREAM_KEY not in record.getMessage()
    assert UPSTREAM_KEY not in caplog.text
