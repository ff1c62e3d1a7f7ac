"""The gateway against a live served exchange with the official ``openai`` client: the buyer
holds lots bought through the order API; the providers' endpoints are the demo upstream with
scripted latency, usage and failures."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import httpx
import openai
import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import api_key_create
from exchange.delivery.endpoints.models import Endpoint, HealthStatus
from exchange.delivery.escrow.models import Lot, Reservation, ReservationStatus
from exchange.delivery.gateway.demo_upstream import demo_tokens
from exchange.delivery.gateway.metering import estimate_prompt_tokens, estimate_tokens
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.ledger import selectors as ledger_selectors
from exchange.markets.models import Market
from tests.delivery.escrow.conftest import assert_audit_ok
from tests.delivery.gateway.conftest import (
    IN,
    MODEL,
    OUT,
    UNITS_PER_IN_TOKEN,
    UNITS_PER_OUT_TOKEN,
    buy,
    client,
    consume_key,
)

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Say something about token exchanges."}]
PROMPT = estimate_prompt_tokens(MESSAGES)
HELD = 10_000  # 0.01 MTok of each market


def cny(units: int) -> str:
    whole, frac = divmod(units, 10**8)
    return f"{whole}.{frac:08d}"


def tokens(user, symbol: str) -> tuple[int, int]:
    found = ledger_selectors.balance_get(user=user, asset=symbol)
    return found.available, found.held


def test_stream_and_whole_answers_are_metered_and_costed_exactly(
    server, make_provider, make_trader
):
    make_provider(server.base, "alpha", "ttft=20,tps=500,len=12")
    buyer = make_trader(cny=10)
    buy(buyer)
    gateway = client(server, consume_key(buyer.user))

    # /v1/models lists what the buyer holds, with its markets
    [model] = gateway.models.list().data
    assert model.id == MODEL
    assert model.model_extra["markets"] == {"input": IN, "output": OUT}
    assert model.model_extra["available"] == {"input_tokens": HELD, "output_tokens": HELD}

    # a whole answer
    raw = gateway.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=20
    )
    answer = raw.parse()
    assert answer.id.startswith("gen-")
    assert raw.headers["x-generation-id"] == answer.id
    assert answer.model == MODEL
    assert answer.choices[0].message.content == "".join(demo_tokens(12))
    usage = answer.usage.model_dump()
    expected_cost = PROMPT * UNITS_PER_IN_TOKEN + 12 * UNITS_PER_OUT_TOKEN
    assert usage["prompt_tokens"] == PROMPT
    assert usage["completion_tokens"] == 12
    assert usage["total_tokens"] == PROMPT + 12
    assert usage["usage_source"] == "provider"
    assert usage["currency"] == "CNY"
    assert usage["cost"] == cny(expected_cost)
    assert usage["credit"] == cny(0)
    assert usage["markets"] == {
        "input": {"market": IN, "tokens": PROMPT, "cost": cny(PROMPT * UNITS_PER_IN_TOKEN)},
        "output": {"market": OUT, "tokens": 12, "cost": cny(12 * UNITS_PER_OUT_TOKEN)},
    }
    assert usage["provider"] == "alpha"
    assert usage["sla"] == {"met": True, "reason": ""}
    assert tokens(buyer.user, IN) == (HELD - PROMPT, 0)
    assert tokens(buyer.user, OUT) == (HELD - 12, 0)

    # a stream: chunks as they come, every one with the generation id, usage in the last
    chunks = list(
        gateway.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, stream=True)
    )
    ids = {chunk.id for chunk in chunks}
    assert len(ids) == 1
    [stream_id] = ids
    assert stream_id.startswith("gen-")
    assert stream_id != answer.id
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(demo_tokens(5))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    # not asked for the usage chunk: usage rides on the finishing chunk, as the last one
    final = chunks[-1]
    assert final.choices[0].finish_reason == "length"
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert final.usage.completion_tokens == 5
    assert final.usage.model_extra["cost"] == cny(
        PROMPT * UNITS_PER_IN_TOKEN + 5 * UNITS_PER_OUT_TOKEN
    )
    assert tokens(buyer.user, OUT) == (HELD - 17, 0)

    # the generation records, without any text
    first, second = Generation.objects.order_by("id")
    assert (first.public_id, second.public_id) == (answer.id, stream_id)
    assert (first.status, first.stream, first.sla_met, first.usage_source) == (
        GenerationStatus.COMPLETED, False, True, "provider"
    )  # fmt: skip
    assert (first.prompt_tokens, first.completion_tokens, first.cost_units) == (
        PROMPT, 12, expected_cost
    )  # fmt: skip
    assert second.first_token_ms is not None
    # the upstream waits 20 ms (ttft=20) on libuv's timer, in whole milliseconds from the
    # loop's cached clock, which can end up to a millisecond early; ours is truncated to ms
    assert second.first_token_ms >= 20 - 2
    assert second.total_ms >= second.first_token_ms
    assert second.finish_reason == "length"
    assert second.output_tokens_per_second is not None
    lots = Lot.objects.filter(holder=buyer.user)
    assert sorted(lot.delivered_tokens for lot in lots) == sorted([2 * PROMPT, 17])
    assert not Reservation.objects.filter(status=ReservationStatus.OPEN).exists()
    assert_audit_ok()


def test_too_little_allocation_is_402_with_the_numbers_and_nothing_forwarded(
    server, make_provider, make_trader
):
    make_provider(server.base, "alpha")
    buyer = make_trader(cny=10)
    buy(buyer)
    gateway = client(server, consume_key(buyer.user))

    with pytest.raises(openai.APIStatusError) as caught:
        gateway.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50_000)
    assert caught.value.status_code == 402
    error = caught.value.body
    assert error["code"] == "insufficient_allocation"
    assert error["details"] == {
        "needed": {"input_tokens": PROMPT, "output_tokens": 50_000},
        "held": {"input_tokens": HELD, "output_tokens": HELD},
    }
    assert tokens(buyer.user, OUT) == (HELD, 0)
    assert not Reservation.objects.exists()
    assert not Generation.objects.exists()


def test_a_failing_provider_is_skipped_and_costs_nothing(server, make_provider, make_trader):
    # given: the lot expiring first is a provider that always fails; another one works
    failing = make_provider(server.base, "flaky", "fail=1", days=1)
    working = make_provider(server.base, "steady", "ttft=10,tps=1000,len=6", days=2)
    buyer = make_trader(cny=10)
    buy(buyer, quantity="0.02", out_price="8.00", in_price="2.00")
    failing_lots = {lot.id: lot.delivered_tokens for lot in Lot.objects.filter(
        holder=buyer.user, provider=failing.user)}  # fmt: skip
    assert len(failing_lots) == 2
    gateway = client(server, consume_key(buyer.user))

    answer = gateway.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)

    assert answer.usage.model_extra["provider"] == "steady"
    assert answer.usage.completion_tokens == 6
    generation = Generation.objects.get(public_id=answer.id)
    assert (generation.attempts, generation.provider_id) == (2, working.user.id)
    first, second = Reservation.objects.order_by("id")
    assert (first.provider_id, first.status) == (failing.user.id, ReservationStatus.RELEASED)
    assert (second.provider_id, second.status) == (working.user.id, ReservationStatus.SETTLED)
    for lot in Lot.objects.filter(holder=buyer.user, provider=failing.user):
        assert (lot.delivered_tokens, lot.reserved_tokens, lot.credited_tokens) == (0, 0, 0)
    assert tokens(buyer.user, OUT) == (2 * HELD - 6, 0)

    # the buyer's `provider` preferences: straight to the one named first, or only the failing
    # one without fallbacks (then 503, and still nothing charged)
    ordered = gateway.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=10,
        extra_body={"provider": {"order": ["steady"]}},
    )
    assert Generation.objects.get(public_id=ordered.id).attempts == 1
    with pytest.raises(openai.APIStatusError) as only_flaky:
        gateway.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=10,
            extra_body={"provider": {"only": ["flaky"], "allow_fallbacks": False}},
        )  # fmt: skip
    assert (only_flaky.value.status_code, only_flaky.value.body["code"]) == (
        503, "no_provider_available"
    )  # fmt: skip
    assert tokens(buyer.user, OUT) == (2 * HELD - 12, 0)
    assert Generation.objects.get(status=GenerationStatus.FAILED).attempts == 1
    assert_audit_ok()


def test_a_slow_provider_earns_the_buyer_the_credit(server, make_provider, make_trader):
    Market.objects.filter(symbol__in=[IN, OUT]).update(max_first_token_latency_ms=100)
    make_provider(server.base, "slow", "ttft=400,tps=1000,len=4")
    buyer = make_trader(cny=10)
    buy(buyer)
    cny_before = ledger_selectors.balance_get(user=buyer.user, asset="CNY").available
    gateway = client(server, consume_key(buyer.user))

    chunks = list(
        gateway.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, max_tokens=8)
    )

    usage = chunks[-1].usage.model_extra
    cost = PROMPT * UNITS_PER_IN_TOKEN + 4 * UNITS_PER_OUT_TOKEN
    assert usage["sla"] == {"met": False, "reason": "first_token_latency"}
    assert (usage["cost"], usage["credit"]) == (cny(cost), cny(cost))  # sla_credit_rate 1
    generation = Generation.objects.get()
    assert (generation.sla_met, generation.sla_reason, generation.credit_units) == (
        False, "first_token_latency", cost
    )  # fmt: skip
    assert generation.first_token_ms >= 400
    assert ledger_selectors.balance_get(user=buyer.user, asset="CNY").available == cny_before + cost
    lots = Lot.objects.filter(holder=buyer.user)
    assert sorted(lot.credited_tokens for lot in lots) == sorted([PROMPT, 4])
    assert sum(lot.delivered_tokens for lot in lots) == 0
    assert_audit_ok()


def test_a_provider_without_usage_is_estimated_and_marked(server, make_provider, make_trader):
    make_provider(server.base, "silent", "usage=0,ttft=5,tps=1000,len=9")
    buyer = make_trader(cny=10)
    buy(buyer)
    gateway = client(server, consume_key(buyer.user))
    text = "".join(demo_tokens(9))

    chunks = list(
        gateway.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    answer = gateway.chat.completions.create(model=MODEL, messages=MESSAGES)

    # asked for: OpenAI's usage chunk, empty choices, last; no other chunk carries usage
    assert chunks[-1].choices == []
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)

    estimated = estimate_tokens(text)
    assert estimated != 9  # the estimate is ours, not the demo's word count
    for usage in (chunks[-1].usage, answer.usage):
        assert usage.prompt_tokens == PROMPT
        assert usage.completion_tokens == estimated
        assert usage.model_extra["usage_source"] == "estimated"
    assert list(Generation.objects.values_list("usage_source", "completion_tokens")) == [
        ("estimated", estimated),
        ("estimated", estimated),
    ]
    assert tokens(buyer.user, OUT) == (HELD - 2 * estimated, 0)
    assert_audit_ok()


def test_a_stream_the_provider_breaks_is_charged_as_delivered_and_credited(
    server, make_provider, make_trader
):
    make_provider(server.base, "breaker", "break=3,ttft=5,tps=1000,len=10")
    buyer = make_trader(cny=10)
    buy(buyer)
    gateway = client(server, consume_key(buyer.user))

    received: list = []
    stream = gateway.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as caught:
        received.extend(stream)
    assert "broke the stream" in str(caught.value)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == "".join(demo_tokens(3))
    # the usage chunk was not asked for: the error event carries the usage
    usage = openai.types.CompletionUsage.model_validate(caught.value.body["usage"])
    assert received[-1].usage is None
    assert usage.model_extra["usage_source"] == "estimated"
    assert usage.model_extra["sla"] == {"met": False, "reason": "broken_stream"}
    assert usage.model_extra["cost"] == usage.model_extra["credit"]
    generation = Generation.objects.get()
    assert generation.status == GenerationStatus.BROKEN
    assert generation.credit_units == generation.cost_units > 0

    # asked for the usage chunk (stream_options.include_usage): it comes before the error
    asked: list = []
    stream = gateway.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    with pytest.raises(openai.APIError) as caught:
        asked.extend(stream)
    assert asked[-1].choices == []
    assert asked[-1].usage.model_extra["sla"] == {"met": False, "reason": "broken_stream"}
    assert "usage" not in caught.value.body
    assert_audit_ok()


def test_refusals_are_openai_errors_and_draw_nothing(server, make_provider, make_trader):
    provider = make_provider(server.base, "alpha")
    buyer = make_trader(cny=10)
    buy(buyer)
    key = consume_key(buyer.user)
    gateway = client(server, key)

    with pytest.raises(openai.NotFoundError) as not_found:
        gateway.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert not_found.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        client(server, "tx_nope_nope").chat.completions.create(model=MODEL, messages=MESSAGES)
    anonymous = httpx.get(f"{server.base}/v1/models", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    trade_only = api_key_create(user=buyer.user, name="trader", scopes=["read", "trade"]).secret
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client(server, trade_only).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert denied.value.body["code"] == "insufficient_scope"
    with pytest.raises(openai.BadRequestError) as bad:
        gateway.chat.completions.create(model=MODEL, messages=MESSAGES, n=2)
    assert bad.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError):
        gateway.chat.completions.create(model=MODEL, messages=[{"role": "robot"}])

    # no healthy provider among the buyer's lots: 503
    Endpoint.objects.filter(provider=provider.user).update(
        status=HealthStatus.DOWN, down_since=timezone.now(), failing_since=timezone.now()
    )
    with pytest.raises(openai.APIStatusError) as unavailable:
        gateway.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert unavailable.value.status_code == 503
    assert unavailable.value.body["code"] == "no_provider_available"
    assert unavailable.value.response.headers["retry-after"] == "5"
    Endpoint.objects.filter(provider=provider.user).update(
        status=HealthStatus.HEALTHY, down_since=None, failing_since=None
    )

    # a key's rate limit: 429 with Retry-After, naming the limit
    limited = client(server, consume_key(buyer.user, requests_per_minute=1))
    limited.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as rate:
        limited.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    assert rate.value.body["details"]["limit"] == "requests_per_minute"
    assert 1 <= int(rate.value.response.headers["retry-after"]) <= 60

    # a key's budget (402) and model allow-list (403)
    budget = client(server, consume_key(buyer.user, tokens_per_day=PROMPT + 10))
    with pytest.raises(openai.APIStatusError) as over:
        budget.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=11)
    assert (over.value.status_code, over.value.body["code"]) == (402, "key_budget_exceeded")
    assert over.value.body["details"]["limit"] == "tokens_per_day"
    budget.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)
    with pytest.raises(openai.APIStatusError) as spent:
        budget.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    assert spent.value.status_code == 402
    narrow = client(server, consume_key(buyer.user, allowed_models=["deepseek-v3.2"]))
    with pytest.raises(openai.PermissionDeniedError) as not_allowed:
        narrow.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert not_allowed.value.body["code"] == "model_not_allowed"
    assert narrow.models.list().data == []

    # none of the refusals drew on the allocation: only the two served requests did
    served = Generation.objects.filter(status=GenerationStatus.COMPLETED)
    assert served.count() == 2
    used = sum(g.completion_tokens for g in served)
    assert tokens(buyer.user, OUT) == (HELD - used, 0)
    assert not Generation.objects.exclude(status=GenerationStatus.COMPLETED).exists()
    assert_audit_ok()


def test_the_playground_session_is_csrf_checked(server, make_provider, make_trader):
    make_provider(server.base, "alpha", "ttft=5,tps=1000,len=3")
    buyer = make_trader(cny=10)
    buy(buyer)
    browser = Client()
    browser.force_login(buyer.user)
    session = browser.cookies["sessionid"].value
    csrf = "a" * 32  # a csrftoken cookie value; the header must repeat it
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 3}
    url = f"{server.base}/v1/chat/completions"

    forged = httpx.post(url, json=body, cookies={"sessionid": session}, timeout=10)
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "csrf_failed"
    signed_out = httpx.post(url, json=body, cookies={"sessionid": "nope"}, timeout=10)
    assert signed_out.status_code == 401
    assert not Generation.objects.exists()

    answered = httpx.post(
        url,
        json=body,
        cookies={"sessionid": session, "csrftoken": csrf},
        headers={"X-CSRFToken": csrf},
        timeout=10,
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["usage"]["completion_tokens"] == 3
    assert Generation.objects.get().api_key is None
    listed = httpx.get(f"{server.base}/v1/models", cookies={"sessionid": session}, timeout=10)
    assert [m["id"] for m in listed.json()["data"]] == [MODEL]


def test_generations_api_shows_buyers_their_own_and_providers_what_they_served(
    server, make_provider, make_trader
):
    provider = make_provider(server.base, "alpha", "ttft=5,tps=1000,len=4", quantity="0.02")
    buyer, other = make_trader(cny=10), make_trader(cny=10)
    buy(buyer, quantity="0.01")
    buy(other, quantity="0.01")
    key = consume_key(buyer.user)
    answer = client(server, key).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4
    )
    client(server, consume_key(other.user)).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4
    )

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    listed = api.get("/api/v1/generations").json()
    [mine] = listed["results"]
    cost = PROMPT * UNITS_PER_IN_TOKEN + 4 * UNITS_PER_OUT_TOKEN
    assert mine["id"] == answer.id
    assert mine["role"] == "buyer"
    assert mine["provider"] == "alpha"
    assert (mine["prompt_tokens"], mine["completion_tokens"]) == (PROMPT, 4)
    assert (mine["cost"], mine["credit"], mine["currency"]) == (cny(cost), cny(0), "CNY")
    assert (mine["input_market"], mine["output_market"]) == (IN, OUT)
    assert mine["sla_met"] is True
    assert "messages" not in mine
    assert "content" not in mine
    assert api.get(f"/api/v1/generations/{answer.id}").json()["id"] == answer.id
    others = Generation.objects.exclude(buyer=buyer.user).get()
    assert api.get(f"/api/v1/generations/{others.public_id}").status_code == 404
    later = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert api.get("/api/v1/generations", {"since": later}).json()["results"] == []

    seller = APIClient()
    seller.force_authenticate(provider.user)
    served = seller.get("/api/v1/generations").json()["results"]
    assert {g["role"] for g in served} == {"provider"}
    assert len(served) == 2
    export = seller.get("/api/v1/generations/export.csv")
    assert export["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0][0] == "id"
    assert sorted(row[0] for row in rows[1:]) == sorted(g["id"] for g in served)


def test_the_added_time_to_first_token_is_measured_per_stream(server, make_provider, make_trader):
    from prometheus_client.parser import text_string_to_metric_families

    def added() -> tuple[float, float]:
        with httpx.Client(timeout=30) as http:
            text = http.get(f"{server.base}/metrics").text
        found = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("exchange_gateway_added_latency_seconds_")
        }
        return found["exchange_gateway_added_latency_seconds_count"], found[
            "exchange_gateway_added_latency_seconds_sum"
        ]

    make_provider(server.base, "alpha", "ttft=20,tps=500,len=6")
    buyer = make_trader(cny=10)
    buy(buyer)
    gateway = client(server, consume_key(buyer.user))
    count, total = added()
    for _ in range(2):
        list(gateway.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    gateway.chat.completions.create(model=MODEL, messages=MESSAGES)  # not a stream: not counted
    after_count, after_total = added()
    assert after_count - count == 2
    assert 0 < after_total - total < 10  # seconds, for both
