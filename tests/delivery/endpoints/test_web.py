"""The endpoints section of the provider dashboard and the providers table of the trade page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from exchange.delivery.endpoints.models import Endpoint, EndpointEvent, EventKind, HealthSample
from tests.delivery.endpoints.conftest import OUT
from tests.delivery.endpoints.helpers import live_endpoint
from tests.delivery.endpoints.upstream_server import UPSTREAM_KEY

pytestmark = pytest.mark.django_db


def logged_in(make_user, role: str):
    user = make_user(role=role)
    client = Client()
    client.force_login(user)
    return client, user


def form(market, upstream, **overrides) -> dict:
    return {
        "market": market.id,
        "base_url": upstream.base_url,
        "api_key": UPSTREAM_KEY,
        "model_id": "qwen3.6-plus",
        "concurrency_limit": "4",
        **overrides,
    }


def test_dashboard_registers_an_endpoint_through_htmx(make_user, market, upstream) -> None:
    client, user = logged_in(make_user, "provider")
    page = client.get(reverse("web:provider")).content.decode()
    assert 'data-testid="provider-endpoints"' in page
    assert "No endpoints yet" in page

    response = client.post(
        reverse("endpoints:create"), form(market, upstream), HTTP_HX_REQUEST="true"
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body
    assert 'id="provider-endpoints"' in body
    assert "registered: it answered and lists qwen3.6-plus" in body
    assert upstream.base_url in body
    assert UPSTREAM_KEY not in body
    assert Endpoint.objects.get().provider == user


def test_a_refused_check_is_shown_and_the_key_not_sent_back(make_user, market, upstream) -> None:
    client, _user = logged_in(make_user, "provider")
    response = client.post(
        reverse("endpoints:create"),
        form(market, upstream, model_id="missing"),
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert "The endpoint check failed" in body
    assert "other-model" not in body  # nothing the upstream listed is echoed
    assert UPSTREAM_KEY not in body
    assert not Endpoint.objects.exists()


def test_plain_post_redirects_to_the_dashboard(make_user, market, upstream) -> None:
    client, _user = logged_in(make_user, "provider")
    response = client.post(reverse("endpoints:create"), form(market, upstream))
    assert response.status_code == 302
    assert response["Location"] == reverse("web:provider")
    assert Endpoint.objects.count() == 1


def test_buyers_cannot_post_and_others_cannot_remove(make_user, market, upstream) -> None:
    buyer, _ = logged_in(make_user, "buyer")
    assert buyer.post(reverse("endpoints:create"), form(market, upstream)).status_code == 403
    owner = make_user(role="provider")
    endpoint = live_endpoint(owner, market)
    other, _ = logged_in(make_user, "provider")
    assert other.post(reverse("endpoints:delete", args=[endpoint.id])).status_code == 404
    assert Endpoint.objects.filter(id=endpoint.id).exists()
    assert upstream.behaviour.seen == []


def test_the_dashboard_tells_the_provider_why_its_asks_went(make_user, market) -> None:
    client, user = logged_in(make_user, "provider")
    endpoint = live_endpoint(user, market)
    EndpointEvent.objects.create(
        provider=user,
        market=market,
        endpoint=endpoint,
        kind=EventKind.DEADMAN_TRIPPED,
        message="Your endpoint for QWEN3.6-PLUS-OUT-CNY has failed every health check.",
        cancelled_order_ids=[1, 2],
    )
    page = client.get(reverse("web:provider")).content.decode()
    assert 'data-testid="endpoint-notice"' in page
    assert "has failed every health check" in page


def test_trade_page_shows_the_providers_figures(make_user, market, client) -> None:
    provider = make_user(role="provider")
    endpoint = live_endpoint(provider, market)
    now = timezone.now()
    for minutes, ok in ((1, True), (2, True), (3, True), (4, False)):
        HealthSample.objects.create(
            endpoint=endpoint,
            provider=provider,
            market=market,
            at=now - timedelta(minutes=minutes),
            source="probe",
            ok=ok,
            first_token_ms=1250 if ok else None,
        )
    page = client.get(reverse("web:trade", args=[OUT])).content.decode()
    assert 'data-testid="market-providers"' in page
    assert f'data-provider-id="{provider.id}"' in page
    assert "75.00%" in page
    assert "1,250 / 1,250" in page
