"""The ledger API: the caller's balances, postings and CSV statement (``read`` scope)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import HasScope
from exchange.api_schema import decimal_string
from exchange.input_bounds import date_bounds_check
from exchange.ledger.models import AssetKind, Posting, TransactionKind
from exchange.ledger.selectors import (
    AssetBalance,
    asset_code_ledger,
    asset_codes_public,
    balance_list,
    posting_list,
    statement_rows,
)
from exchange.ledger.units import amount_display, is_currency
from exchange.paging import HistoryCursor, TimeField
from exchange.times import time_text


def _balance_data(balance: AssetBalance, codes: dict[str, str]) -> dict[str, Any]:
    asset = balance.asset
    data: dict[str, Any] = {
        "asset": codes.get(asset, asset),
        "kind": balance.kind,
        "unit": asset if balance.kind == AssetKind.CURRENCY else "MTok",
        "available": amount_display(asset, balance.available),
        "held": amount_display(asset, balance.held),
        "total": amount_display(asset, balance.total),
    }
    if balance.kind == AssetKind.TOKEN:
        data["tokens"] = {
            "available": balance.available,
            "held": balance.held,
            "total": balance.total,
        }
        data["market"] = asset
    return data


class TokenAmountsSerializer(serializers.Serializer):
    available = serializers.IntegerField()
    held = serializers.IntegerField()
    total = serializers.IntegerField()


class BalanceSerializer(serializers.Serializer):
    asset = serializers.CharField(
        help_text="A currency code, or a token asset's code: its market's base "
        "(QWEN3.6-PLUS-OUT); the market's symbol if several markets share that base."
    )
    kind = serializers.ChoiceField(choices=AssetKind.choices)
    market = serializers.CharField(required=False, help_text="Token assets: their market.")
    unit = serializers.CharField(help_text="The currency, or MTok for a token asset.")
    available = decimal_string()
    held = decimal_string("Reserved by open orders and pending withdrawals.")
    total = decimal_string()
    tokens = TokenAmountsSerializer(required=False, help_text="Token assets: whole tokens.")


class BalancesSerializer(serializers.Serializer):
    balances = BalanceSerializer(many=True)


class BalanceListApi(APIView):
    permission_classes = [HasScope]
    required_scope = "read"

    @extend_schema(
        description=(
            "Per asset: available, held and total as decimal strings — currency units for "
            "currencies, MTok for token assets (which also give integer `tokens`)."
        ),
        responses=BalancesSerializer,
    )
    def get(self, request: Request) -> Response:
        codes = asset_codes_public()
        balances = balance_list(user=request.user)
        return Response({"balances": [_balance_data(b, codes) for b in balances]})


class PostingSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    transaction = serializers.IntegerField(source="transaction_id")
    kind = serializers.CharField(source="transaction.kind")
    reference = serializers.CharField(source="transaction.reference")
    created_at = TimeField(source="transaction.created_at")
    asset = serializers.SerializerMethodField(help_text="As in /balances.")
    bucket = serializers.CharField()
    amount = serializers.SerializerMethodField(help_text="A decimal string; negative: a debit.")

    def get_asset(self, posting: Posting) -> str:
        return self.context["codes"].get(posting.asset_id, posting.asset_id)

    def get_amount(self, posting: Posting) -> str:
        return amount_display(posting.asset_id, posting.amount)


class LedgerFilterSerializer(serializers.Serializer):
    # an empty parameter (``?kind=``) is no filter, as browsers' forms send it
    asset = serializers.CharField(required=False, allow_blank=True, max_length=40)
    kind = serializers.ChoiceField(
        choices=TransactionKind.choices, required=False, allow_blank=True
    )


class LedgerListApi(APIView):
    permission_classes = [HasScope]
    required_scope = "read"
    pagination_class = HistoryCursor  # what GET pages with (the document reads it)

    @extend_schema(parameters=[LedgerFilterSerializer], responses=PostingSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = LedgerFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = {name: value for name, value in filters.validated_data.items() if value}
        if "asset" in wanted:
            wanted["asset"] = asset_code_ledger(wanted["asset"])
        postings = posting_list(user=request.user, **wanted)
        paginator = HistoryCursor(time_field="transaction__created_at")
        page = paginator.paginate_queryset(postings, request, view=self)
        data = PostingSerializer(page, many=True, context={"codes": asset_codes_public()}).data
        return paginator.get_paginated_response(data)


class StatementQuerySerializer(serializers.Serializer):
    start = serializers.DateField(help_text="YYYY-MM-DD, inclusive (UTC).")
    end = serializers.DateField(help_text="YYYY-MM-DD, inclusive (UTC).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # 9999-12-31 made "the day after" (the range's end) overflow: a 500
        date_bounds_check(attrs["start"], field="start")
        date_bounds_check(attrs["end"], field="end")
        if attrs["end"] < attrs["start"]:
            raise serializers.ValidationError("end must not be before start.")
        return attrs


class _Echo:
    """A file-like object whose write returns the line (Django's streaming CSV recipe)."""

    def write(self, value: str) -> str:
        return value


STATEMENT_HEADER = [
    "created_at",
    "transaction",
    "kind",
    "reference",
    "asset",
    "bucket",
    "amount",
    "unit",
    "posting",
]


class StatementCsvApi(APIView):
    permission_classes = [HasScope]
    required_scope = "read"

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # Success is CSV streamed past the renderers; errors fall back to the JSON shape.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[StatementQuerySerializer],
        responses={(200, "text/csv"): str},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query = StatementQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        start, end = query.validated_data["start"], query.validated_data["end"]
        rows = statement_rows(user=request.user, start=start, end=end)
        lines = _csv_lines(rows, asset_codes_public())
        response = StreamingHttpResponse(lines, content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="statement-{start}-{end}.csv"'
        return response


def _csv_lines(postings: Iterator[Posting], codes: dict[str, str]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(STATEMENT_HEADER)
    for posting in postings:
        asset = posting.asset_id
        yield writer.writerow(
            [
                time_text(posting.transaction.created_at),
                posting.transaction_id,
                posting.transaction.kind,
                posting.transaction.reference,
                codes.get(asset, asset),
                posting.bucket,
                amount_display(asset, posting.amount),
                asset if is_currency(asset) else "MTok",
                posting.id,
            ]
        )
