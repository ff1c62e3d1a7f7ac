"""Health probes against a real upstream, the dead-man switch through the engine runner, and
the ask check in order placement and capacity listing."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from exchange.delivery.endpoints.errors import EndpointUnhealthy
from exchange.delivery.endpoints.models import (
    Endpoint,
    EndpointEvent,
    EventKind,
    HealthSample,
    HealthStatus,
)
from exchange.delivery.endpoints.services import endpoint_create, endpoints_probe
from exchange.delivery.endpoints.tasks import endpoints_probe_task
from exchange.delivery.endpoints.upstream import tokens_per_second
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger import services as ledger
from orders.capacity import capacity_list
from orders.models import OPEN_STATUSES, Order, OrderStatus
from orders.services import order_place, order_request_parse
from tests.delivery.endpoints.conftest import OUT
from tests.delivery.endpoints.upstream_server import UPSTREAM_KEY

pytestmark = pytest.mark.django_db


def register(user, market, upstream) -> Endpoint:
    return endpoint_create(
        user=user,
        market=market,
        base_url=upstream.base_url,
        api_key=UPSTREAM_KEY,
        model_id="qwen3.6-plus",
        concurrency_limit=2,
    )


def list_with_ask(user, market, quantity: str = "2", price: str = "8.00"):
    return capacity_list(
        user=user,
        market=market,
        quantity=quantity,
        available_until=timezone.now() + timedelta(hours=2),
        ask_price=price,
    )


def open_asks(user, market) -> list[Order]:
    return list(
        Order.objects.filter(user=user, market=market, side="sell", status__in=OPEN_STATUSES)
    )


def test_tokens_per_second_is_exact_and_needs_two_tokens() -> None:
    assert tokens_per_second(11, 0.5) == Decimal("20.000")
    assert tokens_per_second(1, 0.5) is None
    assert tokens_per_second(5, 0.0) is None


def test_a_probe_records_time_to_first_token_and_speed(make_user, market, upstream) -> None:
    endpoint = register(make_user(role="provider"), market, upstream)
    upstream.behaviour.first_token_delay = 0.15
    upstream.behaviour.token_delay = 0.02
    upstream.behaviour.tokens = 6

    assert endpoints_probe_task() == {"probed": 1, "failed": 0, "requests": 1, "pruned": 0}

    sample = HealthSample.objects.get()
    assert sample.ok
    assert sample.endpoint_id == endpoint.id
    assert 150 <= sample.first_token_ms < 1000
    # 5 tokens after the first in ~0.1 s: about 50/s (the server's sleeps are lower bounds)
    assert Decimal(10) < sample.output_tokens_per_second <= Decimal(50)
    method, path, authorization = upstream.behaviour.seen[-1]
    assert (method, path, authorization) == (
        "POST",
        "/v1/chat/completions",
        f"Bearer {UPSTREAM_KEY}",
    )
    endpoint.refresh_from_db()
    assert endpoint.status == HealthStatus.HEALTHY
    assert endpoint.last_checked_at is not None


def test_endpoints_on_one_upstream_share_a_probe(make_user, market, input_market, upstream) -> None:
    provider = make_user(role="provider")
    out = register(provider, market, upstream)
    inp = register(provider, input_market, upstream)
    upstream.behaviour.seen.clear()

    assert endpoints_probe() == {"probed": 2, "failed": 0, "requests": 1, "pruned": 0}

    assert [path for _, path, _ in upstream.behaviour.seen] == ["/v1/chat/completions"]
    samples = HealthSample.objects.order_by("endpoint_id")
    assert [(s.endpoint_id, s.market_id, s.ok) for s in samples] == [
        (out.id, market.id, True),
        (inp.id, input_market.id, True),
    ]
    assert samples[0].first_token_ms == samples[1].first_token_ms


def test_a_failing_probe_marks_the_endpoint_failing_then_a_success_heals_it(
    make_user, market, upstream
) -> None:
    endpoint = register(make_user(role="provider"), market, upstream)
    upstream.behaviour.fail = True
    endpoints_probe()
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.consecutive_failures, endpoint.last_error) == (
        HealthStatus.FAILING,
        1,
        "HTTP 500",
    )
    assert endpoint.failing_since is not None
    upstream.behaviour.fail = False
    endpoints_probe()
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.consecutive_failures, endpoint.failing_since) == (
        HealthStatus.HEALTHY,
        0,
        None,
    )
    assert [s.ok for s in HealthSample.objects.order_by("at")] == [False, True]


def test_dead_man_switch_cancels_asks_within_the_window_and_blocks_new_ones(
    make_user, market, upstream, fund, settings
) -> None:
    """The endpoint stops answering (its port closes). Probes run every 0.1 s; the window is
    0.6 s: the provider's asks are cancelled through the runner within window + two probe
    intervals of the stop, the provider is told why, and new asks are refused."""
    settings.DELIVERY_DEADMAN_SECONDS = 0.6
    settings.DELIVERY_PROBE_TIMEOUT_SECONDS = 1.0
    provider = make_user(role="provider")
    register(provider, market, upstream)
    list_with_ask(provider, market, quantity="2", price="8.00")
    list_with_ask(provider, market, quantity="1", price="9.00")
    assert len(open_asks(provider, market)) == 2
    held_before = ledger_selectors.balance_get(user=provider, asset=OUT)
    assert (held_before.available, held_before.held) == (0, 3_000_000)
    endpoints_probe()  # healthy

    upstream.stop()
    stopped = time.monotonic()
    while open_asks(provider, market) and time.monotonic() - stopped < 5:
        endpoints_probe()
        time.sleep(0.1)
    elapsed = time.monotonic() - stopped

    assert open_asks(provider, market) == []
    assert elapsed <= 0.6 + 2 * 0.1 + 0.5  # window + two intervals + the probes' own time
    assert set(Order.objects.filter(user=provider).values_list("status", flat=True)) == {
        OrderStatus.CANCELLED
    }
    balance = ledger_selectors.balance_get(user=provider, asset=OUT)
    assert (balance.available, balance.held) == (3_000_000, 0)  # the tokens came back
    endpoint = Endpoint.objects.get()
    assert endpoint.status == HealthStatus.DOWN
    assert endpoint.last_error == "connection refused or host unreachable"
    event = EndpointEvent.objects.get(kind=EventKind.DEADMAN_TRIPPED)
    assert sorted(event.cancelled_order_ids) == sorted(
        Order.objects.filter(user=provider).values_list("id", flat=True)
    )
    assert "2 open ask(s) there were cancelled" in event.message
    assert "connection refused" in event.message

    # New asks are refused: a capacity listing with an ask, and a plain sell order.
    with pytest.raises(EndpointUnhealthy, match="is down"):
        list_with_ask(provider, market)
    request = order_request_parse(market=market, side="sell", price="8.00", quantity="1")
    with pytest.raises(EndpointUnhealthy):
        order_place(user=provider, request=request)
    assert Order.objects.filter(user=provider).count() == 2
    # Probing again while down sends no second notice (nothing was open to cancel).
    endpoints_probe()
    assert EndpointEvent.objects.count() == 1


def test_the_provider_reads_why_through_the_api(
    make_user, market, upstream, client_for, settings
) -> None:
    settings.DELIVERY_DEADMAN_SECONDS = 0
    provider = client_for("provider")
    register(provider.user, market, upstream)
    list_with_ask(provider.user, market)
    upstream.behaviour.fail = True
    endpoints_probe()

    events = provider.get("/api/v1/provider/endpoints/events").json()
    assert [(e["kind"], e["market"], len(e["cancelled_order_ids"])) for e in events] == [
        ("deadman_tripped", OUT, 1)
    ]
    assert "HTTP 500" in events[0]["message"]
    assert provider.get("/api/v1/provider/endpoints").json()[0]["status"] == "down"
    placed = provider.post(
        "/api/v1/orders",
        {"market": OUT, "side": "sell", "price": "8", "quantity": "1"},
        format="json",
    )
    assert placed.status_code == 409
    assert placed.json()["error"]["code"] == "endpoint_unhealthy"


def test_asks_are_accepted_again_once_the_endpoint_answers(
    make_user, market, upstream, settings
) -> None:
    settings.DELIVERY_DEADMAN_SECONDS = 0
    provider = make_user(role="provider")
    register(provider, market, upstream)
    upstream.behaviour.fail = True
    endpoints_probe()
    assert Endpoint.objects.get().status == HealthStatus.DOWN
    with pytest.raises(EndpointUnhealthy):
        list_with_ask(provider, market)

    upstream.behaviour.fail = False
    endpoints_probe()

    assert Endpoint.objects.get().status == HealthStatus.HEALTHY
    assert EndpointEvent.objects.filter(kind=EventKind.RECOVERED).count() == 1
    list_with_ask(provider, market)
    assert len(open_asks(provider, market)) == 1


def test_a_failing_endpoint_keeps_its_asks_inside_the_window(
    make_user, market, upstream, settings
) -> None:
    settings.DELIVERY_DEADMAN_SECONDS = 3600
    provider = make_user(role="provider")
    register(provider, market, upstream)
    list_with_ask(provider, market)
    upstream.behaviour.fail = True
    endpoints_probe()
    endpoints_probe()
    assert Endpoint.objects.get().status == HealthStatus.FAILING
    assert len(open_asks(provider, market)) == 1
    list_with_ask(provider, market)  # still accepted: not down
    assert len(open_asks(provider, market)) == 2


def test_listing_with_an_ask_needs_an_endpoint(make_user, market) -> None:
    provider = make_user(role="provider")
    with pytest.raises(EndpointUnhealthy, match="Register an endpoint"):
        list_with_ask(provider, market)
    # Capacity without an ask is fine; selling it afterwards is not.
    capacity_list(
        user=provider,
        market=market,
        quantity="1",
        available_until=timezone.now() + timedelta(hours=1),
    )
    request = order_request_parse(market=market, side="sell", price="8.00", quantity="1")
    with pytest.raises(EndpointUnhealthy):
        order_place(user=provider, request=request)
    assert not Order.objects.exists()


def test_a_reseller_without_capacity_or_endpoint_is_not_concerned(make_user, market) -> None:
    holder = make_user(role="buyer")
    # tokens without a listing (a staff correction): offering them needs no endpoint (the
    # runner cancels the ask as undeliverable if it would match)
    ledger.adjustment_post(
        user=holder, asset=market.symbol, amount=1_000_000, reason="test", staff_user=None,
        idempotency_key="resale-1",
    )  # fmt: skip
    request = order_request_parse(market=market, side="sell", price="8.00", quantity="1")
    order, created = order_place(user=holder, request=request)
    assert created
    order.refresh_from_db()
    assert order.status == OrderStatus.OPEN


def test_demo_bots_are_exempt_but_a_demo_domain_signup_is_not(make_user, market, settings) -> None:
    from accounts.services import user_create
    from exchange.demo.seed import DEMO_DOMAIN

    settings.DEMO = False
    bot = user_create(
        email=f"bot@{DEMO_DOMAIN}",
        password=None,
        role="provider",
        provider_grant_reason="Demo data (demo_seed).",
    )
    list_with_ask(bot, market)  # seeded demo data: no password, nobody logs in as it
    impostor = make_user(email=f"me@{DEMO_DOMAIN}", role="provider")
    with pytest.raises(EndpointUnhealthy):
        list_with_ask(impostor, market)
    settings.DEMO = True  # the live demo: its public login trades like the bots
    list_with_ask(impostor, market)
    assert Order.objects.filter(side="sell").count() == 2


def test_deleting_the_endpoint_cancels_the_asks(client_for, market, upstream) -> None:
    provider = client_for("provider")
    endpoint = register(provider.user, market, upstream)
    list_with_ask(provider.user, market)
    ask = open_asks(provider.user, market)[0]
    response = provider.delete(f"/api/v1/provider/endpoints/{endpoint.id}")
    assert response.json() == {"deleted": endpoint.id, "cancelled_order_ids": [ask.id]}
    ask.refresh_from_db()
    assert ask.status == OrderStatus.CANCELLED
    event = EndpointEvent.objects.get()
    assert (event.kind, event.cancelled_order_ids) == (EventKind.REMOVED, [ask.id])


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_for_one_market_store_one(make_user, market, upstream) -> None:
    import threading

    from django.db import connection

    from exchange.delivery.endpoints.errors import EndpointExists

    provider = make_user(role="provider")
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def register_one() -> None:
        barrier.wait()
        try:
            register(provider, market, upstream)
            outcomes.append("created")
        except EndpointExists:
            outcomes.append("exists")
        finally:
            connection.close()

    threads = [threading.Thread(target=register_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["created", "exists", "exists", "exists"]
    assert Endpoint.objects.count() == 1
