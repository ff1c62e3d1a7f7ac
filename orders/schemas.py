"""The documented shapes of the orders API's answers (built by ``orders.api``'s ``*_json``
functions; Schemathesis checks the live answers against them)."""

from __future__ import annotations

from rest_framework import serializers

from exchange.api_schema import ErrorBodySerializer, decimal_string, error_response
from orders.models import ListingStatus, OrderStatus, OrderType, SelfTrade, Side, TimeInForce


class OrderSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    client_order_id = serializers.CharField(allow_null=True, max_length=64)
    market = serializers.CharField()
    side = serializers.ChoiceField(choices=Side.choices)
    type = serializers.ChoiceField(choices=OrderType.choices)
    price = decimal_string("Quote per MTok; null for a market order.", allow_null=True)
    protection_price = decimal_string(
        "A market order's worst price (the price band); null for a limit order.",
        allow_null=True,
    )
    quantity = decimal_string("MTok.")
    filled_quantity = decimal_string("MTok.")
    remaining_quantity = decimal_string("MTok.")
    average_price = decimal_string("Of the fills; null before the first.", allow_null=True)
    cost = decimal_string("Quote currency spent or received so far, fees excluded.")
    fee = decimal_string()
    fee_currency = serializers.CharField()
    status = serializers.ChoiceField(choices=OrderStatus.choices)
    time_in_force = serializers.ChoiceField(choices=TimeInForce.choices)
    expire_time = serializers.DateTimeField(allow_null=True)
    post_only = serializers.BooleanField()
    stp = serializers.ChoiceField(choices=SelfTrade.choices)
    cancel_reason = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class FillSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    trade_id = serializers.IntegerField()
    order_id = serializers.IntegerField()
    market = serializers.CharField()
    side = serializers.ChoiceField(choices=Side.choices)
    price = decimal_string("Quote per MTok (the maker's price).")
    quantity = decimal_string("MTok.")
    tokens = serializers.IntegerField()
    cost = decimal_string()
    fee = decimal_string()
    fee_currency = serializers.CharField()
    liquidity = serializers.ChoiceField(choices=["maker", "taker"])
    created_at = serializers.DateTimeField()


class OrderWithFillsSerializer(OrderSerializer):
    fills = FillSerializer(many=True)


class BatchResultSerializer(serializers.Serializer):
    status = serializers.IntegerField(
        help_text="What this order alone would have answered: 201 placed, 200 a replay of its "
        "client_order_id, 4xx refused (with `error`), 500 not placed (send it again)."
    )
    order = OrderSerializer(required=False, help_text="When placed or replayed.")
    error = ErrorBodySerializer(required=False, help_text="When refused.")


class BatchAnswerSerializer(serializers.Serializer):
    results = BatchResultSerializer(many=True, help_text="One per order sent, in its position.")


class CancelAllAnswerSerializer(serializers.Serializer):
    cancel_requested = serializers.ListField(
        child=serializers.IntegerField(), help_text="The ids of the open orders asked to cancel."
    )
    orders = OrderSerializer(
        many=True,
        help_text="Those orders as they are after the cancels (cancelled, or filled meanwhile; "
        "still open only if the engine did not answer in time).",
    )


class CapacityListingSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    market = serializers.CharField()
    quantity = decimal_string("MTok.")
    tokens = serializers.IntegerField()
    available_until = serializers.DateTimeField()
    ask_price = decimal_string("Quote per MTok of the ask placed with it.", allow_null=True)
    status = serializers.ChoiceField(choices=ListingStatus.choices)
    sold_quantity = decimal_string("MTok.")
    resting_quantity = decimal_string("MTok.")
    unsold_quantity = decimal_string("MTok.")
    retired_quantity = decimal_string("MTok.")
    created_at = serializers.DateTimeField()


PLACE_ERRORS = {
    409: error_response(
        "`duplicate_client_order_id` (the id was used for another order), `market_halted` or "
        "`market_closed`."
    ),
    422: error_response("`insufficient_funds`, or `no_liquidity` for a market order."),
    503: error_response(
        "`unavailable`: no answer in time; the order may or may not be placed (look it up by "
        "its client_order_id)."
    ),
}
