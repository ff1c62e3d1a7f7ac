"""Public market-data REST endpoints (no key needed)."""

from __future__ import annotations

from datetime import datetime

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.errors import ValidationFailed
from exchange.marketdata.models import INTERVALS
from exchange.marketdata.schemas import BookSerializer, TickerSerializer
from exchange.marketdata.selectors import book_public, candles_list, ticker_get, trades_recent
from exchange.markets.selectors import market_get


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


def _time_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.isdigit():
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as error:
        raise ValidationFailed(f"{name} must be unix seconds or an ISO 8601 time.") from error
    if moment.tzinfo is None:
        raise ValidationFailed(f"{name} needs a timezone (e.g. Z).")
    return int(moment.timestamp())


class PublicApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []


class TickerApi(PublicApi):
    @extend_schema(responses=TickerSerializer)
    def get(self, request: Request, symbol: str) -> Response:
        return Response(ticker_get(market=market_get(symbol=symbol)))


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
    @extend_schema(parameters=[OpenApiParameter("limit", int)], responses={200: dict})
    def get(self, request: Request, symbol: str) -> Response:
        limit = _int_param(request, "limit", 100, 1, 1000)
        return Response(trades_recent(market=market_get(symbol=symbol), limit=limit))


class CandlesApi(PublicApi):
    @extend_schema(
        parameters=[
            OpenApiParameter("interval", str, enum=list(INTERVALS)),
            OpenApiParameter("start", str),
            OpenApiParameter("end", str),
            OpenApiParameter("limit", int),
        ],
        responses={200: dict},
    )
    def get(self, request: Request, symbol: str) -> Response:
        market = market_get(symbol=symbol)
        interval = request.query_params.get("interval", "1m")
        if interval not in INTERVALS:
            raise ValidationFailed(f"interval must be one of {', '.join(INTERVALS)}.")
        candles = candles_list(
            market=market,
            interval=interval,
            start=_time_param(request, "start"),
            end=_time_param(request, "end"),
            limit=_int_param(request, "limit", 500, 1, 1500),
        )
        return Response({"market": market.symbol, "interval": interval, "candles": candles})
