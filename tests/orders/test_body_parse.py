"""The plain-body shortcut of order parsing returns exactly what DRF's serializer returns."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from rest_framework import serializers

from orders.bodies import OrderBodySerializer, _plain_values

FIELDS = [
    "market",
    "side",
    "type",
    "price",
    "quantity",
    "time_in_force",
    "expire_time",
    "post_only",
    "stp",
    "client_order_id",
]
WORDS = [
    "BTC",
    "buy",
    "sell",
    "limit",
    "market",
    "GTC",
    "IOC",
    "FOK",
    "GTD",
    "cancel_oldest",
    "cancel_both",
    "8.00",
    "1",
    "2026-12-01T00:00:00Z",
]
values = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(WORDS).map(lambda w: f" {w}"),
    st.text(max_size=70),
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.floats(allow_nan=False, width=32),
    st.lists(st.integers(), max_size=2),
    st.just("x" * 65),
    st.just("a\x00b"),
)
bodies = st.dictionaries(st.sampled_from([*FIELDS, "extra"]), values, max_size=11)


def drf(data: Any) -> dict[str, Any] | None:
    try:
        return dict(OrderBodySerializer().run_validation(data))
    except serializers.ValidationError:
        return None


@given(bodies)
def test_the_shortcut_agrees_with_drf_or_steps_aside(data: dict[str, Any]) -> None:
    plain = _plain_values(data)
    if plain is not None:
        assert plain == drf(data)


@given(
    st.fixed_dictionaries(
        {
            "market": st.sampled_from(["QWEN3.6-PLUS-OUT-CNY", "X"]),
            "side": st.sampled_from(["buy", "sell"]),
            "quantity": st.sampled_from(["1", "0.25"]),
        },
        optional={
            "type": st.sampled_from(["limit", "market"]),
            "price": st.one_of(st.none(), st.sampled_from(["8.00", "7.5"])),
            "time_in_force": st.one_of(st.none(), st.sampled_from(["GTC", "IOC", "FOK"])),
            "post_only": st.booleans(),
            "stp": st.one_of(st.none(), st.sampled_from(["cancel_newest", "cancel_both"])),
            "client_order_id": st.one_of(st.none(), st.text("abc-_1", min_size=1, max_size=64)),
            "expire_time": st.none(),
        },
    )
)
def test_what_clients_send_takes_the_shortcut(data: dict[str, Any]) -> None:
    plain = _plain_values(data)
    assert plain is not None
    assert plain == drf(data)


@given(
    st.fixed_dictionaries(
        {
            "market": st.sampled_from(["QWEN3.6-PLUS-OUT-CNY", " X", ""]),
            "side": st.sampled_from(["buy", "sell", "long", "BUY", "", 1]),
            "quantity": st.sampled_from(["1", " 1", 1, None]),
        },
        optional={
            "type": st.sampled_from(["limit", "market", "stop", None, 1]),
            "price": st.sampled_from(["8.00", 8.0, None, "", " 8"]),
            "time_in_force": st.sampled_from(["GTC", "gtc", None, 3]),
            "post_only": st.sampled_from([True, False, "true", 1, None]),
            "stp": st.sampled_from(["cancel_both", "none", None]),
            "client_order_id": st.sampled_from(["a", "", "x" * 64, "x" * 65, None, 5]),
        },
    )
)
def test_near_misses_are_left_to_drf(data: dict[str, Any]) -> None:
    """Bodies close to what clients send, with one thing wrong: the shortcut must agree with
    DRF on every body it takes, and take no body DRF refuses."""
    plain = _plain_values(data)
    expected = drf(data)
    if plain is not None:
        assert plain == expected
    if expected is None:
        assert plain is None
