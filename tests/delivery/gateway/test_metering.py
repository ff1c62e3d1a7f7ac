"""The pure metering core: token estimates, usage, the stream meter, SLA, request checks,
routing. No Django, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from exchange.delivery.gateway.metering import (
    TOKENS_PER_MEDIA_PART,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    ServiceLevel,
    SlaOutcome,
    StreamMeter,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
    finish_reason_clean,
    output_tokens_per_second,
    reservation_size,
    sla_evaluate,
    units_to_decimal,
    usage_bound,
    usage_parse,
)
from exchange.delivery.gateway.protocol import (
    GatewayError,
    ProviderPreferences,
    SseEvents,
    chat_request_parse,
    upstream_body,
)
from exchange.delivery.gateway.routing import Candidate, route

# --- token estimates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("hello", 2),  # 5 letters: two started groups of 4
        ("the cat sat", 3),
        ("Hello, world!", 2 + 1 + 2 + 1),
        ("12345", 2),  # digits in groups of up to 3
        ("你好世界", 4),  # a token per CJK character
        ("a_b", 3),
        ("demo-token", 1 + 1 + 2),
    ],
)
def test_estimate_tokens_counts_pieces(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_estimate_tokens_is_additive_over_whitespace() -> None:
    # a stream's text is estimated per piece: splitting at spaces must not change the count
    text = "The quick brown fox jumps over the lazy dog, 42 times."
    pieces = ["The", " quick", " brown fox", " jumps over", " the lazy dog,", " 42 times."]
    assert sum(estimate_tokens(p) for p in pieces) == estimate_tokens(text)


def test_prompt_estimate_counts_messages_parts_and_tools() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
            ],
            "name": "bob",
        },
    ]
    expected = (
        TOKENS_PER_REPLY
        + 2 * TOKENS_PER_MESSAGE
        + estimate_tokens("Be brief.")
        + estimate_tokens("What is this?")
        + TOKENS_PER_MEDIA_PART
        + estimate_tokens("bob")
    )
    assert estimate_prompt_tokens(messages) == expected
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert estimate_prompt_tokens(messages, tools=tools) > expected


# --- usage -------------------------------------------------------------------------------------


def test_usage_parse_accepts_counts_and_refuses_the_rest() -> None:
    assert usage_parse({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}) == Usage(
        3, 5, "provider"
    )
    assert usage_parse(None) is None
    assert usage_parse({"prompt_tokens": 3}) is None
    assert usage_parse({"prompt_tokens": -1, "completion_tokens": 5}) is None
    assert usage_parse({"prompt_tokens": True, "completion_tokens": 5}) is None
    assert usage_parse({"prompt_tokens": 1.5, "completion_tokens": 5}) is None


def _chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None):
    choices = []
    if content is not None or finish is not None:
        delta = {"content": content} if content is not None else {}
        choices.append({"index": 0, "delta": delta, "finish_reason": finish})
    return {"id": "x", "object": "chat.completion.chunk", "choices": choices, "usage": usage}


def test_stream_meter_times_first_and_last_token_and_takes_provider_usage() -> None:
    meter = StreamMeter()
    role_only = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    assert meter.chunk(role_only, 5) is False
    assert meter.chunk(_chunk("Hello"), 120) is True
    assert meter.chunk(_chunk(" world"), 150) is True
    assert meter.chunk(_chunk(finish="stop"), 160) is False
    meter.chunk(_chunk(usage={"prompt_tokens": 9, "completion_tokens": 2}), 161)
    assert (meter.first_token_ms, meter.last_token_ms) == (120, 150)
    assert meter.finish_reason == "stop"
    assert meter.usage(prompt_estimate=40) == Usage(
        9, 2, "provider", estimate_tokens("Hello world")
    )


def test_stream_meter_estimates_when_the_provider_reports_no_usage() -> None:
    meter = StreamMeter()
    for at, piece in enumerate(["The", " quick", " brown", " fox"]):
        meter.chunk(_chunk(piece), at)
    counted = estimate_tokens("The quick brown fox")
    assert meter.usage(prompt_estimate=17) == Usage(17, counted, "estimated", counted)


def test_provider_usage_beyond_our_count_is_capped_and_marked_disputed() -> None:
    meter = StreamMeter()
    for at in range(3):
        meter.chunk(_chunk("ok "), at)
    meter.chunk(_chunk(usage={"prompt_tokens": 9, "completion_tokens": 500}), 4)
    # we counted 3: at most ceil(3 × 1.5) + 2 = 7 billed
    assert meter.usage(prompt_estimate=40, tolerance=Decimal("1.5"), slack=2) == Usage(
        9, 7, "provider_disputed", 3
    )
    # within the bound: the provider's own count stands
    assert meter.usage(prompt_estimate=40, tolerance=Decimal("1.5"), slack=500) == Usage(
        9, 500, "provider", 3
    )
    # an inflated prompt is capped the same way
    assert meter.usage(prompt_estimate=4, tolerance=Decimal(1), slack=0).prompt_tokens == 4
    assert usage_bound(0, tolerance=Decimal("1.5"), slack=32) == 32
    assert usage_bound(11, tolerance=Decimal("1.1"), slack=0) == 13


def test_stream_meter_counts_tool_calls_and_reasoning_as_generated() -> None:
    meter = StreamMeter()
    delta = {"tool_calls": [{"index": 0, "function": {"name": "lookup", "arguments": '{"q":1}'}}]}
    assert meter.chunk({"choices": [{"index": 0, "delta": delta}]}, 10) is True
    assert meter.chunk({"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]}, 11)
    assert meter.completion_estimate == (
        estimate_tokens("lookup") + estimate_tokens('{"q":1}') + estimate_tokens("hm")
    )


def test_stream_meter_reads_a_whole_response() -> None:
    meter = StreamMeter()
    meter.response(
        {
            "choices": [
                {"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1},
        },
        300,
    )
    assert (meter.first_token_ms, meter.finish_reason) == (300, "length")
    assert meter.usage(prompt_estimate=99) == Usage(4, 1, "provider", 1)


def test_stream_meter_records_a_provider_finish_reason_within_its_column() -> None:
    meter = StreamMeter()
    meter.chunk(_chunk("Hi", finish="stop_" + "x" * 40), 10)
    assert meter.finish_reason == "stop_" + "x" * 27
    whole = StreamMeter()
    whole.response({"choices": [{"message": {"content": "Hi"}, "finish_reason": "y" * 99}]}, 10)
    assert whole.finish_reason == "y" * 32
    assert finish_reason_clean("tool_calls") == "tool_calls"
    assert finish_reason_clean(None) is None


def test_reservation_size_uses_the_market_cap_without_max_tokens() -> None:
    assert reservation_size(prompt_estimate=30, max_tokens=None, default_max_tokens=4096) == (
        30,
        4096,
    )
    assert reservation_size(prompt_estimate=30, max_tokens=7, default_max_tokens=4096) == (30, 7)


# --- service level -----------------------------------------------------------------------------

LEVEL = ServiceLevel(max_first_token_latency_ms=1000, min_throughput_tps=40)


def test_output_rate_after_the_first_token() -> None:
    # 101 tokens, the last 2 s after the first: 100 intervals in 2 s
    rate = output_tokens_per_second(completion_tokens=101, first_token_ms=500, last_token_ms=2500)
    assert rate == Decimal("50.00")
    assert output_tokens_per_second(completion_tokens=1, first_token_ms=1, last_token_ms=9) is None
    assert output_tokens_per_second(completion_tokens=5, first_token_ms=9, last_token_ms=9) is None


@pytest.mark.parametrize(
    ("first", "last", "tokens", "broken", "outcome"),
    [
        (900, 2900, 101, False, SlaOutcome(True, "")),  # 50 tok/s, 0.9 s
        (1001, 3001, 101, False, SlaOutcome(False, "first_token_latency")),
        (900, 4900, 101, False, SlaOutcome(False, "throughput")),  # 25 tok/s
        (100, 200, 5, True, SlaOutcome(False, "broken_stream")),
        (1000, 1000, 1, False, SlaOutcome(True, "")),  # one token: no speed to judge
    ],
)
def test_sla_of_a_stream(first, last, tokens, broken, outcome) -> None:
    assert (
        sla_evaluate(
            level=LEVEL,
            streamed=True,
            first_token_ms=first,
            last_token_ms=last,
            total_ms=last + 5,
            completion_tokens=tokens,
            broken=broken,
        )
        == outcome
    )


def test_sla_of_a_stream_without_tokens_is_judged_on_its_total_time() -> None:
    common = {"level": LEVEL, "streamed": True, "first_token_ms": None, "last_token_ms": None}
    assert sla_evaluate(**common, total_ms=999, completion_tokens=0, broken=False).met
    assert sla_evaluate(**common, total_ms=1001, completion_tokens=0, broken=False) == SlaOutcome(
        False, "first_token_latency"
    )


def test_sla_of_a_whole_response_allows_the_latency_plus_the_length_at_minimum_speed() -> None:
    # 80 tokens at 40 tok/s: 2000 ms, plus 1000 ms to the first token
    common = {"level": LEVEL, "streamed": False, "first_token_ms": 1, "last_token_ms": 1}
    assert sla_evaluate(**common, total_ms=3000, completion_tokens=80, broken=False).met
    assert sla_evaluate(**common, total_ms=3001, completion_tokens=80, broken=False) == SlaOutcome(
        False, "total_time"
    )


def test_a_zero_requirement_is_no_requirement() -> None:
    level = ServiceLevel(0, 0)
    assert sla_evaluate(
        level=level,
        streamed=True,
        first_token_ms=60_000,
        last_token_ms=600_000,
        total_ms=600_000,
        completion_tokens=3,
        broken=False,
    ).met


def test_units_to_decimal_is_exact() -> None:
    assert str(units_to_decimal(123, 8)) == "0.00000123"
    assert format(units_to_decimal(0, 8), "f") == "0.00000000"
    assert units_to_decimal(250_000_000, 8) == Decimal("2.5")


# --- request checks and server-sent events -----------------------------------------------------


def test_chat_request_parse_reads_what_the_gateway_needs() -> None:
    body = {
        "model": "qwen3.6-plus",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": False},
        "max_tokens": 50,
        "max_completion_tokens": 20,
        "temperature": 0.2,
        "provider": {"order": ["Acme", 7], "allow_fallbacks": False, "sort": "price"},
    }
    request = chat_request_parse(body)
    assert request.max_tokens == 20  # max_completion_tokens wins
    assert request.provider == ProviderPreferences(
        order=("acme", "7"), allow_fallbacks=False, sort="price"
    )
    assert "provider" not in request.body
    forwarded = upstream_body(request, upstream_model="Qwen/Qwen3.6-Plus", default_max_tokens=99)
    assert forwarded["model"] == "Qwen/Qwen3.6-Plus"
    assert forwarded["stream_options"] == {"include_usage": True}
    assert forwarded["temperature"] == 0.2
    assert forwarded["max_tokens"] == 50  # as given


def test_upstream_body_caps_the_completion_at_what_was_reserved() -> None:
    request = chat_request_parse({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert request.max_tokens is None
    forwarded = upstream_body(request, upstream_model="up", default_max_tokens=4096)
    assert forwarded["max_tokens"] == 4096
    assert "stream_options" not in forwarded


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot"}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}, "stream"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 10**7}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user"}], "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "user"}], "stream_options": {}}, "stream"),
        (
            {"model": "m", "messages": [{"role": "user"}], "provider": {"sort": "age"}},
            "provider.sort",
        ),
        (
            {"model": "m", "messages": [{"role": "user"}], "provider": {"quantizations": []}},
            "provider",
        ),
        (
            {"model": "m", "messages": [{"role": "user"}], "provider": {"only": "a"}},
            "provider.only",
        ),
    ],
)
def test_chat_request_parse_refuses_bad_bodies_naming_the_parameter(body, param) -> None:
    with pytest.raises(GatewayError) as caught:
        chat_request_parse(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.body()["error"]["type"] == "invalid_request_error"


def test_gateway_error_has_openai_shape_and_retry_after() -> None:
    error = GatewayError(429, "rate_limited", "Slow down.", details={"limit": "rpm"}, retry_after=0)
    assert error.body() == {
        "error": {
            "message": "Slow down.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limited",
            "details": {"limit": "rpm"},
        }
    }
    assert (b"retry-after", b"1") in error.headers()


def test_sse_events_join_data_lines_and_ignore_the_rest() -> None:
    events = SseEvents()
    stream = b': keep-alive\n\nevent: message\ndata: {"a":\ndata: 1}\n\ndata:[DONE]'
    assert events.feed(stream) == [b'{"a":\n1}']
    assert events.end() == b"[DONE]"
    assert events.end() is None


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_events_whatever_the_line_ends_and_the_reads(newline) -> None:
    """Every way of cutting a stream into reads, one byte at a time included, gives the same
    events, for each line ending the format allows (a CRLF split across two reads too)."""
    lines = [b'data: {"n":1}', b"", b": comment", b'data: {"n":', b"data: 2}", b"", b"data: [DONE]"]
    stream = newline.join(lines) + newline + newline
    expected = [b'{"n":1}', b'{"n":\n2}', b"[DONE]"]
    for size in (1, 2, 3, 7, len(stream)):
        events = SseEvents()
        found = []
        for start in range(0, len(stream), size):
            found.extend(events.feed(stream[start : start + size]))
        assert found + ([tail] if (tail := events.end()) else []) == expected, size


# --- routing -----------------------------------------------------------------------------------

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def _candidate(pid: int, name: str, days: int, tokens: int = 10_000, **extra) -> Candidate:
    return Candidate(pid, name, NOW + timedelta(days=days), tokens, tokens, **extra)


A = _candidate(1, "alpha", 3, price=Decimal("9"), latency_ms=900, throughput=Decimal("20"))
B = _candidate(2, "beta", 1, price=Decimal("12"), latency_ms=300, throughput=Decimal("80"))
C = _candidate(3, "gamma", 2, price=Decimal("7"), latency_ms=None, throughput=None)


def _route(prefs=None, healthy=(1, 2, 3), needed=(100, 100), cands=(A, B, C)):
    prefs = prefs or ProviderPreferences()
    result = route(list(cands), healthy=set(healthy), preferences=prefs, needed=needed, model="m")
    return [c.name for c in result]


def test_route_defaults_to_the_lot_expiring_first() -> None:
    assert _route() == ["beta", "gamma", "alpha"]


@pytest.mark.parametrize(
    ("sort", "names"),
    [
        ("price", ["gamma", "alpha", "beta"]),
        ("latency", ["beta", "alpha", "gamma"]),  # unknown latency last
        ("throughput", ["beta", "alpha", "gamma"]),
    ],
)
def test_route_sorts(sort: str, names: list[str]) -> None:
    assert _route(ProviderPreferences(sort=sort)) == names


def test_route_order_only_ignore_and_fallbacks() -> None:
    assert _route(ProviderPreferences(order=("alpha",))) == ["alpha", "beta", "gamma"]
    assert _route(ProviderPreferences(order=("3", "alpha"), allow_fallbacks=False)) == [
        "gamma",
        "alpha",
    ]
    assert _route(ProviderPreferences(only=("alpha", "gamma"))) == ["gamma", "alpha"]
    assert _route(ProviderPreferences(ignore=("beta",))) == ["gamma", "alpha"]
    assert _route(ProviderPreferences(allow_fallbacks=False)) == ["beta"]


def test_route_skips_unhealthy_and_too_small_holders() -> None:
    small = _candidate(4, "delta", 0, tokens=50)
    assert _route(healthy=(1, 3, 4), cands=(A, B, C, small)) == ["gamma", "alpha"]


def test_route_without_healthy_providers_is_503() -> None:
    with pytest.raises(GatewayError) as caught:
        _route(healthy=())
    assert (caught.value.status, caught.value.code) == (503, "no_provider_available")
    with pytest.raises(GatewayError) as caught:
        _route(ProviderPreferences(order=("nobody",), allow_fallbacks=False))
    assert caught.value.status == 503


def test_route_without_enough_allocation_is_402_with_the_numbers() -> None:
    with pytest.raises(GatewayError) as caught:
        _route(needed=(100, 20_000))
    assert (caught.value.status, caught.value.code) == (402, "insufficient_allocation")
    assert caught.value.details == {
        "needed": {"input_tokens": 100, "output_tokens": 20_000},
        "held": {"input_tokens": 10_000, "output_tokens": 10_000},
    }
    with pytest.raises(GatewayError) as caught:
        _route(cands=())
    assert caught.value.details["held"] == {"input_tokens": 0, "output_tokens": 0}
