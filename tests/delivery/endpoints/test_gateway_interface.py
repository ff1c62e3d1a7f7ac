"""What the gateway calls: endpoint_for, healthy_provider_ids (sync and async)."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from exchange.delivery.endpoints.models import HealthStatus
from exchange.delivery.endpoints.selectors import (
    aendpoint_for,
    ahealthy_provider_ids,
    endpoint_for,
    healthy_provider_ids,
)
from tests.delivery.endpoints.helpers import live_endpoint

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_output_markets_endpoint_wins_else_the_input_markets(
    make_user, market, input_market
) -> None:
    provider = make_user(role="provider")
    inp = live_endpoint(provider, input_market, base_url="http://127.0.0.1:9/in/v1")
    pair = [input_market, market]

    only_input = endpoint_for(provider_id=provider.id, markets=pair)
    assert only_input is not None
    assert (only_input.endpoint_id, only_input.base_url) == (inp.id, "http://127.0.0.1:9/in/v1")

    out = live_endpoint(provider, market, base_url="http://127.0.0.1:9/out/v1")
    chosen = endpoint_for(provider_id=provider.id, markets=pair)
    assert chosen is not None
    assert (chosen.endpoint_id, chosen.provider_id, chosen.base_url) == (
        out.id,
        provider.id,
        "http://127.0.0.1:9/out/v1",
    )
    assert (chosen.api_key, chosen.model_id, chosen.concurrency_limit) == (
        "sk-test-not-a-real-key",
        "test-model",
        8,
    )
    assert async_to_sync(aendpoint_for)(provider_id=provider.id, markets=pair) == chosen

    out.status = HealthStatus.FAILING
    out.save()
    fallback = endpoint_for(provider_id=provider.id, markets=pair)
    assert fallback is not None
    assert fallback.endpoint_id == inp.id


def test_only_healthy_endpoints_count(make_user, market, input_market) -> None:
    healthy, failing, down, elsewhere = (make_user(role="provider") for _ in range(4))
    live_endpoint(healthy, market)
    bad = live_endpoint(failing, market)
    bad.status = HealthStatus.FAILING
    bad.save()
    dead = live_endpoint(down, input_market)
    dead.status = HealthStatus.DOWN
    dead.down_since = dead.created_at
    dead.save()
    live_endpoint(elsewhere, input_market)

    assert healthy_provider_ids(markets=[market]) == {healthy.id}
    assert healthy_provider_ids(markets=[input_market, market]) == {healthy.id, elsewhere.id}
    assert async_to_sync(ahealthy_provider_ids)(markets=[input_market, market]) == {
        healthy.id,
        elsewhere.id,
    }
    assert endpoint_for(provider_id=failing.id, markets=[market]) is None
    assert endpoint_for(provider_id=down.id, markets=[input_market, market]) is None
