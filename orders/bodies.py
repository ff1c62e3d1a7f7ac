"""What a client sends to place an order: the body, read by DRF's fields or, for the plain body
every bot sends, by a fast check that returns what the fields would (``_plain_values``); both the
DRF views and the order fast path (``orders.fastpath``) parse with ``order_body_parse``."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from exchange.api_inputs import StrictSerializer
from exchange.markets.models import Market
from exchange.markets.selectors import market_get
from exchange.paging import TimeField
from orders.models import OrderType, SelfTrade, Side, TimeInForce
from orders.services import OrderRequest, order_request_parse


class OrderBodySerializer(StrictSerializer):
    market = serializers.CharField()
    side = serializers.ChoiceField(choices=Side.choices)
    type = serializers.ChoiceField(choices=OrderType.choices, default="limit")
    price = serializers.CharField(required=False, allow_null=True, help_text="Quote per MTok.")
    quantity = serializers.CharField(help_text="MTok (1,000,000 tokens), a multiple of the lot.")
    time_in_force = serializers.ChoiceField(
        choices=TimeInForce.choices, required=False, allow_null=True
    )
    expire_time = TimeField(required=False, allow_null=True)
    post_only = serializers.BooleanField(default=False)
    stp = serializers.ChoiceField(choices=SelfTrade.choices, required=False, allow_null=True)
    client_order_id = serializers.CharField(
        required=False, allow_null=True, max_length=64, min_length=1
    )

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            for field in ("price", "quantity"):
                if isinstance(data.get(field), float):
                    raise serializers.ValidationError(
                        {field: ["Send decimals as strings, never as floats."]}
                    )
        return super().to_internal_value(data)


_CHOICES = {
    name: frozenset(str(choice) for choice in field.choices)
    for name, field in OrderBodySerializer().fields.items()
    if isinstance(field, serializers.ChoiceField)
}
_REQUIRED_TEXT = ("market", "side", "quantity")
_KNOWN = frozenset(OrderBodySerializer().fields)


def _plain(value: Any) -> bool:
    """A string DRF's CharField returns unchanged (no blanks to trim, nothing it refuses)."""
    return (
        type(value) is str
        and value != ""
        and value == value.strip()
        and "\x00" not in value
        and value.isprintable()
    )


def _plain_values(data: Any) -> dict[str, Any] | None:
    """What ``OrderBodySerializer`` returns for ``data`` when ``data`` is the plain body every
    client sends (strings, choices, a boolean), or None: then DRF validates it and words its
    errors. Validating a plain body through DRF's fields was most of a batch's CPU."""
    if type(data) is not dict or any(key not in _KNOWN for key in data):
        return None
    if not all(_plain(data.get(name)) for name in _REQUIRED_TEXT):
        return None
    if data["side"] not in _CHOICES["side"]:
        return None
    values = {name: data[name] for name in _REQUIRED_TEXT}
    for name, default in (("type", "limit"), ("time_in_force", None), ("stp", None)):
        value = data.get(name, default)
        if value is None and name in data and default is not None:
            return None  # type: null is DRF's to refuse
        if value is not None:
            if type(value) is not str or value not in _CHOICES[name]:
                return None
            values[name] = value
        elif name in data:
            values[name] = None
    for name in ("price", "client_order_id"):
        if name in data:
            value = data[name]
            if value is not None and not _plain(value):
                return None
            values[name] = value
    client_order_id = values.get("client_order_id")
    if client_order_id is not None and len(client_order_id) > 64:
        return None
    if data.get("expire_time") is not None:
        return None  # date parsing and time zones: DRF's
    if "expire_time" in data:
        values["expire_time"] = None
    post_only = data.get("post_only", False)
    if type(post_only) is not bool:
        return None
    values["post_only"] = post_only
    return values


def order_body_parse(
    data: Any,
    markets: dict[str, Market] | None = None,
    body: OrderBodySerializer | None = None,
) -> OrderRequest:
    """``markets``: symbol → market already read in this request (a batch reads each once);
    ``body``: a serializer to validate with (a batch reuses one: DRF deep-copies its fields for
    every new serializer, which was most of a batch's parsing)."""
    values = _plain_values(data)
    if values is None:
        values = (body or OrderBodySerializer()).run_validation(data)
    symbol = values["market"]
    market = markets.get(symbol) if markets is not None else None
    if market is None:
        market = market_get(symbol=symbol)
        if markets is not None:
            markets[symbol] = market
    return order_request_parse(
        market=market,
        side=values["side"],
        type=values["type"],
        price=values.get("price"),
        quantity=values["quantity"],
        time_in_force=values.get("time_in_force"),
        expire_time=values.get("expire_time"),
        post_only=values["post_only"],
        stp=values.get("stp"),
        client_order_id=values.get("client_order_id"),
    )
