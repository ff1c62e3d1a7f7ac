"""The documented shapes of the public market-data answers (``exchange.marketdata.selectors``
builds them; Schemathesis checks the live answers against these)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from exchange.api_schema import DECIMAL_PATTERN, decimal_string
from orders.models import Side


class TickerSerializer(serializers.Serializer):
    market = serializers.CharField()
    last = decimal_string("The last trade's price; null before the first trade.", allow_null=True)
    bid = decimal_string("Best bid, quote per MTok.", allow_null=True)
    bid_quantity = decimal_string("MTok at the best bid.", allow_null=True)
    ask = decimal_string("Best ask, quote per MTok.", allow_null=True)
    ask_quantity = decimal_string("MTok at the best ask.", allow_null=True)
    open_24h = decimal_string(allow_null=True)
    high_24h = decimal_string(allow_null=True)
    low_24h = decimal_string(allow_null=True)
    volume_24h = decimal_string("MTok.")
    volume_tokens_24h = serializers.IntegerField()
    quote_volume_24h = decimal_string()
    trades_24h = serializers.IntegerField()
    change_24h_percent = decimal_string(allow_null=True)
    time = serializers.DateTimeField()


@extend_schema_field(
    {
        "type": "array",
        "description": "[price (quote per MTok, a decimal string), quantity (MTok, a decimal "
        "string), number of orders (an integer)]",
        "items": {"oneOf": [{"type": "string", "pattern": DECIMAL_PATTERN}, {"type": "integer"}]},
        "minItems": 3,
        "maxItems": 3,
        "example": ["8.01", "1.5", 2],
    }
)
class BookLevelField(serializers.JSONField):
    """One price level of the book."""


class BookSerializer(serializers.Serializer):
    market = serializers.CharField()
    seq = serializers.IntegerField(help_text="The book's sequence (the websocket deltas carry it).")
    checksum = serializers.IntegerField(help_text="CRC32 of the top levels (docs: websocket).")
    time = serializers.DateTimeField(
        allow_null=True, help_text="The time of the book's last change; null: it never changed."
    )
    bids = serializers.ListField(child=BookLevelField(), help_text="Best (highest) first.")
    asks = serializers.ListField(child=BookLevelField(), help_text="Best (lowest) first.")


class PublicTradeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    price = decimal_string("Quote per MTok.")
    quantity = decimal_string("MTok.")
    taker_side = serializers.ChoiceField(choices=Side.choices)
    time = serializers.DateTimeField()


class CandleSerializer(serializers.Serializer):
    time = serializers.DateTimeField(help_text="The start of the candle's period.")
    open = decimal_string()
    high = decimal_string()
    low = decimal_string()
    close = decimal_string()
    volume = decimal_string("MTok.")
    quote_volume = decimal_string()
    trades = serializers.IntegerField()
