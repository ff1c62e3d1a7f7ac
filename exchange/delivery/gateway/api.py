"""Generations API: ``GET /api/v1/generations`` (cursor, ``since``), ``/{id}``, and a CSV
export. A buyer sees their requests, a provider the requests it served; there is no prompt or
completion text to show (the gateway never stores it)."""

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

from accounts.authentication import HasScope, request_scopes
from exchange.delivery.gateway.models import Generation
from exchange.delivery.gateway.selectors import generation_get, generation_list
from exchange.ledger.units import amount_display
from exchange.paging import (
    HistoryCursor,
    TimeField,
    time_query,
    time_window,
    time_window_parameters,
)


class ReadsGenerations(HasScope):
    """A session, or a key with ``read`` or ``consume`` (an agent may read its own usage)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        scopes = request_scopes(request)
        if scopes is not None and not scopes & {"read", "consume"}:
            self.message = "This API key needs the 'read' or 'consume' scope."
            return False
        return True


class GenerationSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    role = serializers.SerializerMethodField(help_text="buyer or provider: your side of it.")
    model = serializers.CharField(source="model_id")
    provider = serializers.SerializerMethodField()
    input_market = serializers.CharField(source="input_market.symbol")
    output_market = serializers.CharField(source="output_market.symbol")
    status = serializers.CharField()
    stream = serializers.BooleanField()
    attempts = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    usage_source = serializers.CharField()
    currency = serializers.CharField()
    input_cost = serializers.SerializerMethodField()
    output_cost = serializers.SerializerMethodField()
    cost = serializers.SerializerMethodField()
    credit = serializers.SerializerMethodField()
    first_token_ms = serializers.IntegerField(allow_null=True)
    total_ms = serializers.IntegerField(allow_null=True)
    output_tokens_per_second = serializers.DecimalField(
        max_digits=12, decimal_places=2, allow_null=True
    )
    finish_reason = serializers.CharField()
    sla_met = serializers.BooleanField(allow_null=True)
    sla_reason = serializers.CharField()
    error_code = serializers.CharField()
    created_at = TimeField()
    finished_at = TimeField(allow_null=True)

    def get_role(self, generation: Generation) -> str:
        return "buyer" if generation.buyer_id == self.context["user"].pk else "provider"

    def get_provider(self, generation: Generation) -> str | None:
        if generation.provider is None:
            return None
        profile = getattr(generation.provider, "profile", None)
        return (profile.display_name if profile else "") or f"Provider #{generation.provider_id}"

    def get_input_cost(self, generation: Generation) -> str:
        return amount_display(generation.currency, generation.input_cost_units)

    def get_output_cost(self, generation: Generation) -> str:
        return amount_display(generation.currency, generation.output_cost_units)

    def get_cost(self, generation: Generation) -> str:
        return amount_display(generation.currency, generation.cost_units)

    def get_credit(self, generation: Generation) -> str:
        return amount_display(generation.currency, generation.credit_units)


def _generations(request: Request) -> Any:
    """The list (the paginator applies ``since``/``until`` itself)."""
    return generation_list(user=request.user)


class GenerationListApi(APIView):
    permission_classes = [ReadsGenerations]
    pagination_class = HistoryCursor  # what GET pages with (the document reads it)

    @extend_schema(responses=GenerationSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = HistoryCursor()
        page = paginator.paginate_queryset(
            _generations(request).select_related("provider__profile"), request, view=self
        )
        data = GenerationSerializer(page, many=True, context={"user": request.user}).data
        return paginator.get_paginated_response(data)


class GenerationDetailApi(APIView):
    permission_classes = [ReadsGenerations]

    @extend_schema(responses=GenerationSerializer)
    def get(self, request: Request, public_id: str) -> Response:
        generation = generation_get(user=request.user, public_id=public_id)
        return Response(GenerationSerializer(generation, context={"user": request.user}).data)


class _Echo:
    """A file-like object whose write returns the line (Django's streaming CSV recipe)."""

    def write(self, value: str) -> str:
        return value


CSV_FIELDS = [name for name in GenerationSerializer().fields if name not in ("stream",)]


class GenerationCsvApi(APIView):
    permission_classes = [ReadsGenerations]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # Success is CSV streamed past the renderers; errors fall back to the JSON shape.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(parameters=time_window_parameters(), responses={(200, "text/csv"): str})
    def get(self, request: Request) -> StreamingHttpResponse:
        generations = time_window(
            _generations(request), time_query(request, "since"), time_query(request, "until")
        )
        rows = (
            generations.select_related("provider__profile").order_by("-id").iterator(chunk_size=500)
        )
        response = StreamingHttpResponse(_csv_lines(rows, request.user), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="generations.csv"'
        return response


# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP
# "CSV injection"); some fields carry provider-chosen text (finish reason, provider name).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: a string that would start a formula gets a leading
    apostrophe (shown as text, not evaluated). Numbers are left alone (a negative number is
    data, not a formula; none of our numeric fields is text a provider chose)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _csv_lines(generations: Iterator[Generation], user: Any) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_FIELDS)
    serializer = GenerationSerializer(context={"user": user})
    for generation in generations:
        data = serializer.to_representation(generation)
        yield writer.writerow([csv_cell(data[f]) for f in CSV_FIELDS])
