"""Public market-data REST endpoints (no key needed)."""

from __future__ import annotations

from pathlib import Path

import yaml
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.errors import ValidationFailed
from exchange.marketdata.models import INTERVALS
from exchange.marketdata.schemas import (
    BookSerializer,
    CandleSerializer,
    PublicTradeSerializer,
    TickerSerializer,
)
from exchange.marketdata.selectors import (
    book_public,
    candles_public,
    candles_query,
    ticker_get,
    trades_public,
    trades_query,
)
from exchange.markets.selectors import market_get, market_list
from exchange.paging import HistoryCursor


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as error:
        raise ValidationFailed(f"{name} must be an integer.") from error
    if not low <= value <= high:
        raise ValidationFailed(f"{name} must be between {low} and {high}.")
    return value


ASYNCAPI_PATH = Path(__file__).resolve().parent / "docs" / "asyncapi.yaml"


@require_GET
def asyncapi_document(request: HttpRequest) -> HttpResponse:
    """The websocket protocol as an AsyncAPI 3 document (YAML; ``?format=json`` for JSON)."""
    text = ASYNCAPI_PATH.read_text(encoding="utf-8")
    if request.GET.get("format") == "json":
        return JsonResponse(yaml.safe_load(text))
    return HttpResponse(text, content_type="application/yaml; charset=utf-8")


class PublicApi(APIView):
    permission_classes = [AllowAny]
    # no key needed; a key sent is checked, and its requests count against the key


class TickerApi(PublicApi):
    @extend_schema(responses=TickerSerializer)
    def get(self, request: Request, symbol: str) -> Response:
        return Response(ticker_get(market=market_get(symbol=symbol)))


class TickerListApi(PublicApi):
    @extend_schema(
        responses=TickerSerializer(many=True),
        description="Every market's ticker (as `/markets/{symbol}/ticker`), by symbol.",
    )
    def get(self, request: Request) -> Response:
        return Response([ticker_get(market=market) for market in market_list()])


class BookApi(PublicApi):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "depth",
                {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                description="Levels per side.",
            )
        ],
        responses=BookSerializer,
    )
    def get(self, request: Request, symbol: str) -> Response:
        depth = _int_param(request, "depth", 50, 1, 100)
        return Response(book_public(market=market_get(symbol=symbol), depth=depth))


class TradesApi(PublicApi):
    pagination_class = HistoryCursor  # what GET pages with (the document reads it)

    @extend_schema(responses=PublicTradeSerializer(many=True))
    def get(self, request: Request, symbol: str) -> Response:
        market = market_get(symbol=symbol)
        paginator = HistoryCursor()
        page = paginator.paginate_queryset(trades_query(market=market), request, view=self)
        return paginator.get_paginated_response(trades_public(market, page))


class CandlesApi(PublicApi):
    pagination_class = HistoryCursor

    @extend_schema(
        parameters=[
            OpenApiParameter("interval", str, enum=list(INTERVALS)),
        ],
        description="`since`/`until` select by the start of the candle's period.",
        responses=CandleSerializer(many=True),
    )
    def get(self, request: Request, symbol: str) -> Response:
        market = market_get(symbol=symbol)
        interval = request.query_params.get("interval", "1m")
        if interval not in INTERVALS:
            raise ValidationFailed(f"interval must be one of {', '.join(INTERVALS)}.")
        paginator = HistoryCursor(position_field="start", time_field="start", time_in_seconds=True)
        candles = candles_query(market=market, interval=interval)
        page = paginator.paginate_queryset(candles, request, view=self)
        return paginator.get_paginated_response(candles_public(market, page))
