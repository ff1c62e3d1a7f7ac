from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.markets.models import Market
from exchange.markets.selectors import market_get, market_list


class MarketSerializer(serializers.ModelSerializer):
    tick_size = serializers.DecimalField(
        max_digits=20, decimal_places=8, coerce_to_string=True, normalize_output=True
    )
    lot_size = serializers.DecimalField(max_digits=20, decimal_places=6, normalize_output=True)
    min_quantity = serializers.DecimalField(max_digits=20, decimal_places=6, normalize_output=True)
    maker_fee_rate = serializers.DecimalField(max_digits=6, decimal_places=5, normalize_output=True)
    taker_fee_rate = serializers.DecimalField(max_digits=6, decimal_places=5, normalize_output=True)
    price_band = serializers.DecimalField(max_digits=5, decimal_places=4, normalize_output=True)
    tokens_per_lot = serializers.IntegerField(read_only=True)
    price_unit = serializers.SerializerMethodField()
    quantity_unit = serializers.SerializerMethodField()

    class Meta:
        model = Market
        fields = [
            "symbol",
            "base",
            "quote_currency",
            "model_name",
            "token_kind",
            "region",
            "min_throughput_tps",
            "max_first_token_latency_ms",
            "tick_size",
            "lot_size",
            "min_quantity",
            "tokens_per_lot",
            "maker_fee_rate",
            "taker_fee_rate",
            "price_band",
            "status",
            "price_unit",
            "quantity_unit",
        ]

    def get_price_unit(self, market: Market) -> str:
        return f"{market.quote_currency} per MTok (1,000,000 tokens)"

    def get_quantity_unit(self, market: Market) -> str:
        return "MTok"


class MarketListApi(APIView):
    permission_classes = [AllowAny]
    # no key needed; a key sent is checked, and its requests count against the key

    @extend_schema(responses=MarketSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(MarketSerializer(market_list(), many=True).data)


class MarketDetailApi(APIView):
    permission_classes = [AllowAny]
    # no key needed; a key sent is checked, and its requests count against the key

    @extend_schema(responses=MarketSerializer)
    def get(self, request: Request, symbol: str) -> Response:
        return Response(MarketSerializer(market_get(symbol=symbol)).data)
