"""REST endpoints for orders, fills, capacity and allocations."""

from __future__ import annotations

import logging
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.conf import settings
from django.db.models import Q
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import HasScope
from exchange.api_errors import error_body, message_of
from exchange.api_inputs import UNKNOWN_FIELD, StrictSerializer, unknown_fields
from exchange.api_schema import error_response
from exchange.errors import ExchangeError, ValidationFailed
from exchange.markets.models import Market
from exchange.markets.selectors import market_get
from exchange.paging import HistoryCursor, TimeField
from exchange.times import time_text
from orders import capacity
from orders.bodies import OrderBodySerializer, order_body_parse
from orders.models import (
    OPEN_STATUSES,
    Order,
    OrderStatus,
    Trade,
)
from orders.schemas import (
    PLACE_ERRORS,
    BatchAnswerSerializer,
    CancelAllAnswerSerializer,
    CapacityListingSerializer,
    FillSerializer,
    OrderSerializer,
    OrderWithFillsSerializer,
)
from orders.selectors import fill_list, order_get, order_get_by_client_id, order_list
from orders.services import (
    OrderRequest,
    order_cancel,
    order_cancel_all,
    order_cancel_wait,
    order_place,
    order_place_many,
    order_wait,
    orders_wait,
)
from orders.units import lots_to_quantity, ticks_to_price, units_to_amount

MAX_BATCH = 50

logger = logging.getLogger(__name__)


def order_json(order: Order) -> dict[str, Any]:
    market = order.market
    filled = order.filled_lots
    average = None
    if filled:
        filled_mtok = market.lot_size * filled
        average_value = Decimal(order.cost).scaleb(-market.quote_decimals) / filled_mtok
        average = format(
            average_value.quantize(Decimal(1).scaleb(-8), rounding=ROUND_HALF_EVEN).normalize(), "f"
        )
    return {
        "id": order.id,
        "client_order_id": order.client_order_id,
        "market": market.symbol,
        "side": order.side,
        "type": order.type,
        "price": ticks_to_price(market, order.price_ticks),
        "protection_price": ticks_to_price(market, order.protection_ticks),
        "quantity": lots_to_quantity(market, order.quantity_lots),
        "filled_quantity": lots_to_quantity(market, filled),
        "remaining_quantity": lots_to_quantity(market, order.quantity_lots - filled),
        "average_price": average,
        "cost": units_to_amount(market, order.cost),
        "fee": units_to_amount(market, order.fee),
        "fee_currency": market.quote_currency,
        "status": order.status,
        "time_in_force": order.time_in_force,
        "expire_time": time_text(order.expire_time),
        "post_only": order.post_only,
        "stp": order.stp,
        "cancel_reason": order.cancel_reason or None,
        "created_at": time_text(order.created_at),
        "updated_at": time_text(order.updated_at),
    }


def fill_json(trade: Trade, user_id: int) -> dict[str, Any]:
    market = trade.market
    is_buyer = trade.buyer_id == user_id
    side = "buy" if is_buyer else "sell"
    order_id = trade.taker_order_id if trade.taker_side == side else trade.maker_order_id
    return {
        "id": trade.id,
        "trade_id": trade.id,
        "order_id": order_id,
        "market": market.symbol,
        "side": side,
        "price": ticks_to_price(market, trade.price_ticks),
        "quantity": lots_to_quantity(market, trade.quantity_lots),
        "tokens": trade.quantity_lots * market.tokens_per_lot,
        "cost": units_to_amount(market, trade.notional),
        "fee": units_to_amount(market, trade.buyer_fee if is_buyer else trade.seller_fee),
        "fee_currency": market.quote_currency,
        "liquidity": "taker" if trade.taker_side == side else "maker",
        "created_at": time_text(trade.created_at),
    }


def _place(request: Request, data: Any) -> tuple[Order, bool]:
    order, created = order_place(user=request.user, request=order_body_parse(data))
    if order.status == OrderStatus.PENDING:
        order = order_wait(order=order, timeout=settings.ORDER_WAIT_SECONDS)
    return order, created


def order_with_fills_json(order: Order, trades: list[Trade] | None = None) -> dict[str, Any]:
    """The order with its fills (``trades``: the order's trades, if already read)."""
    data = order_json(order)
    data["fills"] = []
    if order.filled_lots:
        if trades is None:
            trades = list(
                Trade.objects.select_related("market")
                .filter(Q(taker_order=order) | Q(maker_order=order))
                .order_by("id")
            )
        data["fills"] = [fill_json(t, order.user_id) for t in trades]
    return data


IdCursor = HistoryCursor  # orders and fills: by id, windowed by created_at


class OrderListApi(APIView):
    permission_classes = [HasScope]
    pagination_class = IdCursor  # what GET pages with (the document reads it)
    required_scopes = {"GET": "read", "POST": "trade", "DELETE": "trade"}

    @extend_schema(
        parameters=[
            OpenApiParameter("market", str),
            OpenApiParameter("status", str, enum=["open", "closed", "all"]),
            OpenApiParameter("client_order_id", str),
        ],
        responses=OrderSerializer(many=True),
        operation_id="orders_list",
    )
    def get(self, request: Request) -> Response:
        symbol = request.query_params.get("market")
        status_filter = request.query_params.get("status", "all")
        if status_filter not in ("open", "closed", "all"):
            raise ValidationFailed("status must be open, closed or all.")
        orders = order_list(
            user=request.user,
            market=market_get(symbol=symbol) if symbol else None,
            status=status_filter,
            client_order_id=request.query_params.get("client_order_id"),
        )
        paginator = IdCursor()
        page = paginator.paginate_queryset(orders, request, view=self)
        return paginator.get_paginated_response([order_json(o) for o in page])

    @extend_schema(
        request=OrderBodySerializer,
        responses={
            201: OrderWithFillsSerializer,
            200: OpenApiResponse(
                OrderWithFillsSerializer, description="A replay of its client_order_id."
            ),
            **PLACE_ERRORS,
        },
        operation_id="orders_place",
    )
    def post(self, request: Request) -> Response:
        order, created = _place(request, request.data)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(order_with_fills_json(order), status=code)

    @extend_schema(
        parameters=[OpenApiParameter("market", str)],
        responses={200: CancelAllAnswerSerializer},
        operation_id="orders_cancel_all",
    )
    def delete(self, request: Request) -> Response:
        symbol = request.query_params.get("market")
        market = market_get(symbol=symbol) if symbol else None
        requested = order_cancel_all(user=request.user, market=market)
        orders = list(Order.objects.select_related("market").filter(id__in=requested))
        timeout = settings.ORDER_WAIT_SECONDS
        orders = orders_wait(orders=orders, timeout=timeout, settled=OPEN_STATUSES)
        orders.sort(key=lambda order: order.id)
        return Response(
            {"cancel_requested": requested, "orders": [order_json(order) for order in orders]}
        )


@extend_schema_field(
    {
        "description": "An order as POST /orders takes it (OrderBodyRequest). An item that is "
        "not one is refused on its own: status 400 in its result, the others are placed."
    }
)
class BatchItemField(serializers.JSONField):
    pass


class BatchBodySerializer(StrictSerializer):
    orders = serializers.ListField(
        child=BatchItemField(), min_length=1, max_length=MAX_BATCH, help_text="1 to 50 orders."
    )


class OrderBatchApi(APIView):
    permission_classes = [HasScope]
    required_scope = "trade"

    @extend_schema(
        request=BatchBodySerializer,
        responses={200: BatchAnswerSerializer, 503: PLACE_ERRORS[503]},
        description="Up to 50 orders, each placed or refused on its own (see `results`).",
    )
    def post(self, request: Request) -> Response:
        results, parsed = batch_parse(request.data)
        placed = order_place_many(user=request.user, requests=[r for _, r in parsed])
        waited = orders_wait(
            orders=[o[0] for o in placed if not isinstance(o, Exception)],
            timeout=settings.ORDER_WAIT_SECONDS,
        )
        return Response(batch_answer(results, parsed, placed, waited))


Parsed = list[tuple[int, OrderRequest]]


def batch_parse(
    data: Any, markets: dict[str, Market] | None = None
) -> tuple[list[dict[str, Any] | None], Parsed]:
    """A batch request's body: (a result per order, with the refused ones filled in; the
    accepted ones as (position, request)). Raises ``ValidationFailed`` for a bad envelope.
    ``markets``: markets already read (symbol → market), shared with the caller."""
    unknown = unknown_fields(data, {"orders"})
    if unknown:
        raise ValidationFailed(f"{next(iter(unknown))}: {UNKNOWN_FIELD}", details=unknown)
    orders = data.get("orders") if isinstance(data, dict) else None
    if not isinstance(orders, list) or not orders:
        raise ValidationFailed('Send {"orders": [...]} with 1 to 50 orders.')
    if len(orders) > MAX_BATCH:
        raise ValidationFailed(f"At most {MAX_BATCH} orders per batch.")
    results: list[dict[str, Any] | None] = [None] * len(orders)
    parsed: Parsed = []
    markets = {} if markets is None else markets
    body = OrderBodySerializer()
    for position, item in enumerate(orders):
        try:
            parsed.append((position, order_body_parse(item, markets, body)))
        except ExchangeError as error:
            results[position] = _error_result(error)
        except serializers.ValidationError as error:
            results[position] = {
                "status": 400,
                **error_body("invalid", message_of(error.detail), error.detail),
            }
    return results, parsed


def batch_answer(
    results: list[dict[str, Any] | None],
    parsed: Parsed,
    placed: list[tuple[Order, bool] | Exception],
    waited: list[Order],
) -> dict[str, Any]:
    """The batch response: ``placed`` answers ``parsed`` in order; ``waited`` holds the placed
    orders (in that order) as they are now."""
    answers = iter(waited)
    for (position, _), outcome in zip(parsed, placed, strict=True):
        if isinstance(outcome, ExchangeError):
            results[position] = _error_result(outcome)
        elif isinstance(outcome, Exception):  # placing it failed; the others keep their answers
            logger.error("order in a batch not placed", exc_info=outcome)
            results[position] = {
                "status": 500,
                **error_body("server_error", "The order was not placed; send it again."),
            }
        else:
            results[position] = {
                "status": 201 if outcome[1] else 200,
                "order": order_json(next(answers)),
            }
    return {"results": results}


def _error_result(error: ExchangeError) -> dict[str, Any]:
    return {"status": error.http_status, **error_body(error.code, error.message, error.details)}


class OrderDetailApi(APIView):
    permission_classes = [HasScope]
    required_scopes = {"GET": "read", "DELETE": "trade"}

    @extend_schema(responses=OrderWithFillsSerializer, operation_id="order_get")
    def get(self, request: Request, order_id: int) -> Response:
        return Response(order_with_fills_json(order_get(user=request.user, order_id=order_id)))

    @extend_schema(
        responses={
            200: OrderSerializer,
            409: error_response("`order_not_open`: filled, cancelled or rejected already."),
        },
        operation_id="order_cancel",
    )
    def delete(self, request: Request, order_id: int) -> Response:
        return Response(_cancel(request, order_id))


def _cancel(request: Request, order_id: int) -> dict[str, Any]:
    order = order_cancel(user=request.user, order_id=order_id)
    order.refresh_from_db()
    order = order_cancel_wait(order=order, timeout=settings.ORDER_WAIT_SECONDS)
    return order_json(order)


class OrderByClientIdApi(APIView):
    """An order addressed by the ``client_order_id`` the client gave it (what ccxt's
    ``params={"clientOrderId": ...}`` means)."""

    permission_classes = [HasScope]
    required_scopes = {"GET": "read", "DELETE": "trade"}

    @extend_schema(responses=OrderWithFillsSerializer, operation_id="order_get_by_client_id")
    def get(self, request: Request, client_order_id: str) -> Response:
        order = order_get_by_client_id(user=request.user, client_order_id=client_order_id)
        return Response(order_with_fills_json(order))

    @extend_schema(
        responses={
            200: OrderSerializer,
            409: error_response("`order_not_open`: filled, cancelled or rejected already."),
        },
        operation_id="order_cancel_by_client_id",
    )
    def delete(self, request: Request, client_order_id: str) -> Response:
        order = order_get_by_client_id(user=request.user, client_order_id=client_order_id)
        return Response(_cancel(request, order.id))


class FillListApi(APIView):
    permission_classes = [HasScope]
    pagination_class = IdCursor
    required_scope = "read"

    @extend_schema(
        parameters=[OpenApiParameter("market", str)], responses=FillSerializer(many=True)
    )
    def get(self, request: Request) -> Response:
        symbol = request.query_params.get("market")
        fills = fill_list(user=request.user, market=market_get(symbol=symbol) if symbol else None)
        paginator = IdCursor()
        page = paginator.paginate_queryset(fills, request, view=self)
        return paginator.get_paginated_response([fill_json(t, request.user.id) for t in page])


class CapacityBodySerializer(StrictSerializer):
    market = serializers.CharField()
    quantity = serializers.CharField(help_text="MTok")
    available_until = TimeField()
    ask_price = serializers.CharField(required=False, allow_null=True)


class CapacityApi(APIView):
    permission_classes = [HasScope]
    required_scopes = {"GET": "read", "POST": "trade"}
    pagination_class = IdCursor  # GET pages like orders and fills (newest first)

    @extend_schema(responses={200: CapacityListingSerializer(many=True)})
    def get(self, request: Request) -> Response:
        paginator = IdCursor()
        page = paginator.paginate_queryset(
            capacity.listing_list(user=request.user), request, view=self
        )
        return paginator.get_paginated_response(capacity.listings_json(page))

    @extend_schema(
        request=CapacityBodySerializer,
        responses={
            201: CapacityListingSerializer,
            409: PLACE_ERRORS[409],
            422: PLACE_ERRORS[422],
        },
    )
    def post(self, request: Request) -> Response:
        body = CapacityBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        listing = capacity.capacity_list(
            user=request.user,
            market=market_get(symbol=values["market"]),
            quantity=values["quantity"],
            available_until=values["available_until"],
            ask_price=values.get("ask_price"),
        )
        return Response(capacity.listing_json(listing), status=status.HTTP_201_CREATED)


class AllocationSerializer(serializers.Serializer):
    """One lot of the buyer's (the schema of ``capacity.allocation_list_json``)."""

    lot_id = serializers.IntegerField()
    market = serializers.CharField()
    provider_id = serializers.IntegerField()
    provider = serializers.CharField()
    price = serializers.CharField(help_text="The lot's escrow price, quote currency per MTok.")
    bought_quantity = serializers.CharField(help_text="MTok")
    bought_tokens = serializers.IntegerField()
    delivered_tokens = serializers.IntegerField()
    credited_tokens = serializers.IntegerField(help_text="Served, but missed the service level.")
    reserved_tokens = serializers.IntegerField(help_text="Held by requests running now.")
    moved_tokens = serializers.IntegerField(help_text="Resold.")
    unconsumed_tokens = serializers.IntegerField(help_text="Retired unused at expiry.")
    remaining_tokens = serializers.IntegerField()
    consumed_tokens = serializers.IntegerField(help_text="delivered + credited")
    escrow = serializers.CharField(help_text="Still held in escrow for this lot.")
    market_balance_tokens = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    available_until = serializers.DateTimeField(help_text="= expires_at (earlier name).")
    status = serializers.ChoiceField(choices=["open", "expired", "closed"])


class AllocationListApi(APIView):
    permission_classes = [HasScope]
    required_scope = "read"

    @extend_schema(responses={200: AllocationSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(capacity.allocation_list_json(user=request.user))
