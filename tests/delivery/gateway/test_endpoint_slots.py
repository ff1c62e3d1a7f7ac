"""An endpoint's concurrency limit holds across gateway processes (slots in Redis), and the
slots of a process that died come back by themselves."""

from __future__ import annotations

import threading

import httpx
import pytest

from exchange.delivery.endpoints.models import Endpoint
from exchange.delivery.gateway import slots
from exchange.delivery.gateway.models import Generation
from tests.delivery.escrow.conftest import assert_audit_ok
from tests.delivery.gateway.conftest import MODEL, buy, consume_key, exchange_server


def test_slots_are_redis_counted_limited_and_given_back(db, settings):
    assert slots._redis() is not None  # the tests run against the real Redis
    endpoint = 10**9 + 7
    assert [slots.take(endpoint_id=endpoint, slot=f"g.{n}", limit=2) for n in range(3)] == [
        True,
        True,
        False,
    ]
    assert slots.take(endpoint_id=endpoint, slot="g.1", limit=2)  # taking it again: idempotent
    assert slots.in_use(endpoint_id=endpoint) == 2
    slots.give_back(endpoint_id=endpoint, slot="g.0")
    assert slots.take(endpoint_id=endpoint, slot="g.2", limit=2)
    slots.give_back(endpoint_id=endpoint, slot="g.1")
    slots.give_back(endpoint_id=endpoint, slot="g.2")
    assert slots.in_use(endpoint_id=endpoint) == 0


def test_slots_taken_and_given_back_in_one_round_trip_as_each_alone(db, settings):
    endpoint, other = 10**9 + 9, 10**9 + 10
    asks = [(endpoint, "b.0", 2), (endpoint, "b.1", 2), (other, "b.2", 1), (endpoint, "b.3", 2)]
    assert slots.take_many(asks=asks) == [True, True, True, False]
    assert (slots.in_use(endpoint_id=endpoint), slots.in_use(endpoint_id=other)) == (2, 1)
    assert slots.take_many(asks=[(endpoint, "b.1", 2), (other, "b.4", 1)]) == [True, False]
    slots.give_back_many(slots=[(endpoint, "b.0"), (endpoint, "b.1"), (other, "b.2")])
    assert (slots.in_use(endpoint_id=endpoint), slots.in_use(endpoint_id=other)) == (0, 0)


def test_the_slots_of_a_dead_process_expire(db, settings):
    endpoint = 10**9 + 8
    assert slots.take(endpoint_id=endpoint, slot="live.0", limit=2)
    # a slot that expired at once: as if its process had died a time limit ago
    settings.GATEWAY_MAX_REQUEST_SECONDS = -slots.MARGIN_SECONDS - 1
    assert slots.take(endpoint_id=endpoint, slot="dead.1", limit=2)
    settings.GATEWAY_MAX_REQUEST_SECONDS = 600
    assert slots.in_use(endpoint_id=endpoint) == 1
    assert slots.take(endpoint_id=endpoint, slot="live.2", limit=2)
    assert not slots.take(endpoint_id=endpoint, slot="live.3", limit=2)
    slots.give_back(endpoint_id=endpoint, slot="live.0")
    slots.give_back(endpoint_id=endpoint, slot="live.2")


@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_two_gateway_processes(make_provider, make_trader):
    # given: two gateway processes and a provider whose endpoint serves one request at a time
    with exchange_server() as first, exchange_server() as second:
        provider = make_provider(first.base, "single", "ttft=10,tps=10,len=30")
        Endpoint.objects.filter(provider=provider.user).update(concurrency_limit=1)
        buyer = make_trader(cny=10)
        buy(buyer)
        key = consume_key(buyer.user)
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Go."}],
            "max_tokens": 30,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {key}"}
        streaming = threading.Event()
        done = threading.Event()

        def hold() -> None:
            with httpx.stream(
                "POST", f"{first.base}/v1/chat/completions", json=body, headers=headers, timeout=30
            ) as response:
                for line in response.iter_lines():
                    if '"content":"' in line:
                        streaming.set()
            done.set()

        holder = threading.Thread(target=hold)
        holder.start()
        assert streaming.wait(20)

        # when: another request goes through the other process meanwhile
        refused = httpx.post(
            f"{second.base}/v1/chat/completions",
            json={**body, "stream": False},
            headers=headers,
            timeout=30,
        )
        holder.join(30)

        # then: the endpoint's one slot is taken: no provider is available (nothing charged)
        assert done.is_set()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["details"]["failures"] == ["busy"]
        # and once the first is done, the slot is free again
        answer = httpx.post(
            f"{second.base}/v1/chat/completions",
            json={**body, "stream": False, "max_tokens": 3},
            headers=headers,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert Generation.objects.filter(status="failed").count() == 1
        assert_audit_ok()
