"""REST API of provider endpoints (``/api/v1/provider/endpoints``) and the public per-provider
statistics of a market (``/api/v1/markets/{symbol}/providers``).

The upstream API key is write-only: it is accepted on create/update and never serialized.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import HasScope
from accounts.models import Profile
from exchange.api_inputs import StrictSerializer
from exchange.api_schema import ErrorSerializer
from exchange.delivery.endpoints import selectors, services
from exchange.delivery.endpoints.models import Endpoint, EndpointEvent, HealthStatus
from exchange.markets.selectors import market_get
from exchange.paging import ModelSerializer


class IsProvider(BasePermission):
    message = "Only providers manage endpoints."

    def has_permission(self, request: Request, view: Any) -> bool:
        profile = Profile.objects.filter(user=request.user).first()
        return profile is not None and profile.is_provider


class EndpointSerializer(ModelSerializer):
    """An endpoint as its provider sees it (never its API key)."""

    market = serializers.SlugRelatedField(slug_field="symbol", read_only=True)
    status = serializers.ChoiceField(
        choices=HealthStatus.choices,
        read_only=True,
        help_text=(
            "healthy: answered its last check; failing: its last check failed (asks stay until "
            "the dead-man window passes); down: failed every check for the window — its asks "
            "were cancelled and new asks are refused until it answers again."
        ),
    )

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "market",
            "base_url",
            "model_id",
            "concurrency_limit",
            "status",
            "last_checked_at",
            "last_success_at",
            "last_failure_at",
            "failing_since",
            "down_since",
            "consecutive_failures",
            "last_error",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


# An HTTP header value: visible ASCII, no spaces (anything else could not be sent upstream).
API_KEY_PATTERN = r"^[\x21-\x7e]+$"


class EndpointCreateSerializer(StrictSerializer):
    market = serializers.CharField(help_text="Market symbol, e.g. QWEN3.6-PLUS-OUT-CNY.")
    base_url = serializers.URLField(
        max_length=300, help_text="OpenAI-compatible base URL, e.g. https://api.example.com/v1."
    )
    api_key = serializers.RegexField(
        API_KEY_PATTERN,
        write_only=True,
        max_length=4096,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="The upstream API key (printable ASCII, sent as a header). Stored encrypted; "
        "never returned.",
    )
    model_id = serializers.CharField(max_length=200, help_text="The upstream's model id.")
    concurrency_limit = serializers.IntegerField(
        min_value=1,
        max_value=services.MAX_CONCURRENCY_LIMIT,
        default=8,
        help_text="Most simultaneous requests the exchange sends this upstream.",
    )


class EndpointUpdateSerializer(StrictSerializer):
    base_url = serializers.URLField(max_length=300, required=False)
    api_key = serializers.RegexField(
        API_KEY_PATTERN,
        write_only=True,
        required=False,
        max_length=4096,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="A new upstream API key (stored encrypted; never returned).",
    )
    model_id = serializers.CharField(max_length=200, required=False)
    concurrency_limit = serializers.IntegerField(
        min_value=1, max_value=services.MAX_CONCURRENCY_LIMIT, required=False
    )


class EndpointEventSerializer(ModelSerializer):
    market = serializers.SlugRelatedField(slug_field="symbol", read_only=True)
    endpoint_id = serializers.IntegerField(read_only=True, allow_null=True)
    cancelled_order_ids = serializers.ListField(child=serializers.IntegerField(), read_only=True)

    class Meta:
        model = EndpointEvent
        fields = [
            "id",
            "kind",
            "market",
            "endpoint_id",
            "message",
            "cancelled_order_ids",
            "created_at",
        ]
        read_only_fields = fields


_ERROR = ErrorSerializer  # the API's one error shape
_WRITE_ERRORS = {
    400: OpenApiResponse(_ERROR, description="Invalid body (in production base_url is https)."),
    403: OpenApiResponse(_ERROR, description="Not a provider, or the key lacks `trade`."),
    422: OpenApiResponse(
        _ERROR,
        description=(
            "`endpoint_check_failed`: `GET {base_url}/models` with the key failed or does not "
            "list the model id, or the host is not a public address; one message whatever the "
            "cause, nothing the upstream answered is echoed; nothing was saved."
        ),
    ),
}


class _ProviderApi(APIView):
    permission_classes = [HasScope, IsProvider]
    required_scope = "trade"


class EndpointListApi(_ProviderApi):
    @extend_schema(
        operation_id="provider_endpoints_list",
        responses={200: EndpointSerializer(many=True)},
        tags=["provider endpoints"],
    )
    def get(self, request: Request) -> Response:
        endpoints = selectors.endpoint_list(user=request.user)
        return Response(EndpointSerializer(endpoints, many=True).data)

    @extend_schema(
        operation_id="provider_endpoints_create",
        request=EndpointCreateSerializer,
        responses={
            201: EndpointSerializer,
            **_WRITE_ERRORS,
            409: OpenApiResponse(_ERROR, description="`endpoint_exists` for this market."),
        },
        tags=["provider endpoints"],
    )
    def post(self, request: Request) -> Response:
        body = EndpointCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        endpoint = services.endpoint_create(
            user=request.user,
            market=market_get(symbol=values["market"]),
            base_url=values["base_url"],
            api_key=values["api_key"],
            model_id=values["model_id"],
            concurrency_limit=values["concurrency_limit"],
        )
        return Response(EndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class EndpointDetailApi(_ProviderApi):
    @extend_schema(
        operation_id="provider_endpoints_get",
        responses={200: EndpointSerializer, 404: OpenApiResponse(_ERROR)},
        tags=["provider endpoints"],
    )
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=endpoint_id)
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(
        operation_id="provider_endpoints_update",
        request=EndpointUpdateSerializer,
        responses={200: EndpointSerializer, 404: OpenApiResponse(_ERROR), **_WRITE_ERRORS},
        tags=["provider endpoints"],
    )
    def patch(self, request: Request, endpoint_id: int) -> Response:
        body = EndpointUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = services.endpoint_update(
            user=request.user, endpoint_id=endpoint_id, **body.validated_data
        )
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(
        operation_id="provider_endpoints_delete",
        responses={
            200: inline_serializer(
                name="EndpointDeleted",
                fields={
                    "deleted": serializers.IntegerField(),
                    "cancelled_order_ids": serializers.ListField(
                        child=serializers.IntegerField(),
                        help_text="Your open asks in the market, cancelled with the endpoint.",
                    ),
                },
            ),
            404: OpenApiResponse(_ERROR),
        },
        tags=["provider endpoints"],
    )
    def delete(self, request: Request, endpoint_id: int) -> Response:
        cancelled = services.endpoint_delete(user=request.user, endpoint_id=endpoint_id)
        return Response({"deleted": endpoint_id, "cancelled_order_ids": cancelled})


class EndpointEventListApi(_ProviderApi):
    @extend_schema(
        operation_id="provider_endpoint_events_list",
        description=(
            "What happened to your endpoints that you must know: the dead-man switch firing "
            "(asks cancelled, with why) and recoveries. Newest first, at most 100."
        ),
        responses={200: EndpointEventSerializer(many=True)},
        tags=["provider endpoints"],
    )
    def get(self, request: Request) -> Response:
        events = selectors.event_list(user=request.user)[:100]
        return Response(EndpointEventSerializer(events, many=True).data)


# --- public statistics --------------------------------------------------------------------------
class UptimeSerializer(serializers.Serializer):
    ratio = serializers.DecimalField(
        max_digits=5,
        decimal_places=4,
        allow_null=True,
        help_text="successes / (successes + errors), 4 decimals; null without samples.",
    )
    successes = serializers.IntegerField()
    errors = serializers.IntegerField()


class PercentilesSerializer(serializers.Serializer):
    p50 = serializers.IntegerField(allow_null=True)
    p90 = serializers.IntegerField(allow_null=True)


class DecimalPercentilesSerializer(serializers.Serializer):
    p50 = serializers.DecimalField(max_digits=12, decimal_places=3, allow_null=True)
    p90 = serializers.DecimalField(max_digits=12, decimal_places=3, allow_null=True)


class ProviderStatsSerializer(serializers.Serializer):
    provider_id = serializers.IntegerField()
    provider = serializers.CharField(help_text="The provider's display name.")
    status = serializers.ChoiceField(
        choices=HealthStatus.choices,
        allow_null=True,
        help_text="The endpoint's health now; null: no endpoint registered (any longer).",
    )
    uptime = inline_serializer(
        name="ProviderUptime",
        fields={
            "5m": UptimeSerializer(),
            "30m": UptimeSerializer(),
            "1d": UptimeSerializer(),
        },
    )
    first_token_ms = PercentilesSerializer(
        help_text="Time to first token, ms, over the last 30 minutes (nearest-rank percentiles)."
    )
    output_tokens_per_second = DecimalPercentilesSerializer(
        help_text="Output tokens per second after the first token, over the last 30 minutes."
    )


class MarketProvidersApi(APIView):
    permission_classes = [AllowAny]
    # no key needed; a key sent is checked, and its requests count against the key

    @extend_schema(
        operation_id="market_providers",
        description=(
            "Per provider serving this market: endpoint health, uptime over 5 min / 30 min / "
            "1 day (health probes and served requests), time to first token and output "
            "tokens/s p50/p90 over the last 30 minutes."
        ),
        responses={200: ProviderStatsSerializer(many=True), 404: OpenApiResponse(_ERROR)},
        tags=["markets"],
    )
    def get(self, request: Request, symbol: str) -> Response:
        market = market_get(symbol=symbol)
        stats = selectors.market_provider_stats(market=market)
        return Response(ProviderStatsSerializer(stats, many=True).data)
