"""The demo providers' endpoints against the real demo upstream (served by uvicorn on a
loopback port): one fast, one slow, one failing every fourth request."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from exchange.delivery.endpoints.demo import demo_endpoints_register
from exchange.delivery.endpoints.models import Endpoint, HealthSample, HealthStatus
from exchange.delivery.endpoints.selectors import healthy_provider_ids
from exchange.delivery.endpoints.services import endpoints_probe
from exchange.delivery.escrow.selectors import model_pairs
from exchange.delivery.gateway.demo_upstream import DemoUpstream
from exchange.demo.seed import demo_seed
from exchange.markets.services import demo_markets_load

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_upstream_root() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = DemoUpstream(prefix="/demo-upstream")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}/demo-upstream"
    server.should_exit = True
    thread.join(5)
    sock.close()


def test_demo_providers_register_and_behave_as_labelled(demo_upstream_root) -> None:
    demo_markets_load()
    users = demo_seed()
    alpha, beta, gamma = users["providers"]
    markets = [market for pair in model_pairs() for market in pair.markets]
    assert len(markets) >= 2

    endpoints = demo_endpoints_register(root=demo_upstream_root)
    assert len(endpoints) == 3 * len(markets)
    assert demo_endpoints_register(root=demo_upstream_root) == endpoints  # idempotent
    assert Endpoint.objects.count() == 3 * len(markets)
    assert healthy_provider_ids(markets=markets) == {alpha.id, beta.id, gamma.id}

    result = endpoints_probe()

    # one probe per provider: each demo provider has one upstream URL for all its markets
    assert result == {"probed": 3 * len(markets), "failed": 0, "requests": 3, "pruned": 0}
    samples = list(HealthSample.objects.all())
    fast = [s for s in samples if s.provider_id == alpha.id]
    slow = [s for s in samples if s.provider_id == beta.id]
    assert len(fast) == len(slow) == len(markets)
    assert all(s.ok and s.first_token_ms < 1500 for s in fast)
    assert all(s.ok and s.first_token_ms >= 2500 for s in slow)
    assert all(s.output_tokens_per_second < 30 for s in slow)

    # Gamma fails every 4th request of its URL: two more requests, then the probe is the 4th.
    gamma_url = Endpoint.objects.filter(provider=gamma).first().base_url
    for _ in range(2):
        httpx.post(
            f"{gamma_url}/chat/completions",
            json={"model": "exchange-demo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer any"},
            timeout=10,
        ).raise_for_status()
    result = endpoints_probe()
    assert result["failed"] == len(markets)
    flaky = HealthSample.objects.filter(provider=gamma).order_by("at")
    assert [s.ok for s in flaky] == [True] * len(markets) + [False] * len(markets)
    # a failed probe marks the endpoint failing, not down: the dead-man window is minutes
    statuses = set(Endpoint.objects.filter(provider=gamma).values_list("status", flat=True))
    assert statuses == {HealthStatus.FAILING}
    assert healthy_provider_ids(markets=markets) == {alpha.id, beta.id}
