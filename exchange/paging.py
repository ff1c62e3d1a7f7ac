"""The API's history conventions: one time field, one way to page through anything by time.

Every history list (public trades, candles, orders, fills, ledger entries, deposits,
withdrawals, generations) takes the same query parameters and answers the same envelope
``{"next": url|null, "previous": url|null, "results": [...]}``:

- ``since`` — from this time on (inclusive); ``until`` — before this time (exclusive). Both
  RFC 3339 or integer milliseconds since the epoch (``exchange.times``).
- ``limit`` — 1 to ``MAX_LIMIT`` (default ``DEFAULT_LIMIT``); anything else is a 400.
- ``cursor`` — the opaque value in ``next``/``previous``; a cursor not made by us is a 400.
- Order: with ``since``, oldest first (the first ``limit`` from ``since`` — what ccxt's
  ``since`` means); without it, newest first (the latest ``limit``). Following ``next`` walks on
  in the same order and, since the position is a unique id, never skips nor repeats a row.
"""

from __future__ import annotations

import contextlib
from base64 import b64decode
from datetime import datetime
from typing import Any
from urllib import parse

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.pagination import Cursor
from rest_framework.request import Request

from exchange.api_paging import StrictCursorPagination
from exchange.errors import ValidationFailed
from exchange.times import (
    MAX_MILLISECONDS,
    TIME_FORMAT_HELP,
    TimeFormatError,
    time_ms,
    time_parse,
    time_text,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class TimeField(serializers.DateTimeField):
    """A DRF date-time in the API's one format: out RFC 3339 UTC ``...T06:40:01.123Z``; in
    the same or integer milliseconds since the epoch. (DRF's ``DATETIME_FORMAT`` is a strftime
    pattern, which cannot write milliseconds, hence a field.)"""

    default_error_messages = {"invalid": TIME_FORMAT_HELP}

    def to_representation(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        return time_text(value)

    def to_internal_value(self, value: Any) -> datetime:
        try:
            return time_parse(value)
        except TimeFormatError:
            self.fail("invalid")
            raise  # unreachable: fail raises


class ModelSerializer(serializers.ModelSerializer):
    """DRF's ``ModelSerializer`` writing model date-times in the API's format."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        **{
            model_field: TimeField
            for model_field, field in serializers.ModelSerializer.serializer_field_mapping.items()
            if field is serializers.DateTimeField
        },
    }


def time_query(request: Request, name: str) -> datetime | None:
    """The time query parameter ``name`` (None when absent); a 400 for any other format."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return time_parse(raw)
    except TimeFormatError as error:
        message = f"{name}: {TIME_FORMAT_HELP}"
        raise ValidationFailed(message, details={name: [TIME_FORMAT_HELP]}) from error


_TIME_SCHEMA: dict[str, dict[str, Any]] = {
    name: {
        "description": f"{description} {TIME_FORMAT_HELP}",
        "type": {
            "oneOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "minimum": 0, "maximum": MAX_MILLISECONDS},
            ]
        },
    }
    for name, description in (
        ("since", "From this time on (inclusive), oldest first."),
        ("until", "Before this time (exclusive)."),
    )
}


def time_window(
    queryset: QuerySet[Any],
    since: datetime | None,
    until: datetime | None,
    *,
    field: str = "created_at",
    in_seconds: bool = False,
) -> QuerySet[Any]:
    """Rows of ``queryset`` whose ``field`` is from ``since`` (inclusive) to ``until``
    (exclusive); ``in_seconds``: the field holds whole seconds since the epoch."""
    low: Any = since
    high: Any = until
    if in_seconds:  # a bucket starting in the same second as ``since`` but before it is not in
        low = -(-time_ms(since) // 1000) if since is not None else None
        high = -(-time_ms(until) // 1000) if until is not None else None
    if low is not None:
        queryset = queryset.filter(**{f"{field}__gte": low})
    if high is not None:
        queryset = queryset.filter(**{f"{field}__lt": high})
    return queryset


def time_window_parameters() -> list[OpenApiParameter]:
    """``since`` and ``until`` for an operation that is not paged (a CSV export)."""
    return [
        OpenApiParameter(name, location="query", required=False, **_TIME_SCHEMA[name])
        for name in ("since", "until")
    ]


class HistoryCursor(StrictCursorPagination):
    """Cursor pagination over ``position_field`` (a unique, increasing integer), windowed by
    ``since``/``until`` on ``time_field`` (a date-time, or integer seconds when
    ``time_in_seconds``). Cursor and limit are refused as ``StrictCursorPagination`` refuses
    them; the cursor's position must also be an integer (else a 500 in the query)."""

    page_size = DEFAULT_LIMIT
    page_size_query_param = "limit"
    max_page_size = MAX_LIMIT
    position_field = "id"
    time_field = "created_at"
    time_in_seconds = False

    def __init__(self, **options: Any) -> None:
        for name, value in options.items():
            if not hasattr(type(self), name):
                raise TypeError(f"unknown option {name}")
            setattr(self, name, value)

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any]:
        since = time_query(request, "since")
        until = time_query(request, "until")
        queryset = time_window(
            queryset, since, until, field=self.time_field, in_seconds=self.time_in_seconds
        )
        self.ascending = since is not None
        page = super().paginate_queryset(queryset, request, view)
        return page if page is not None else []

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        return (self.position_field if self.ascending else f"-{self.position_field}",)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        times = [
            {
                "name": name,
                "required": False,
                "in": "query",
                "description": schema["description"],
                "schema": schema["type"],
            }
            for name, schema in _TIME_SCHEMA.items()
        ]
        return [*times, *super().get_schema_operation_parameters(view)]

    def decode_cursor(self, request: Request) -> Cursor | None:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        cursor = None
        with contextlib.suppress(ValueError, UnicodeError, TypeError):
            tokens = parse.parse_qs(
                b64decode(encoded.encode("ascii"), validate=True).decode("ascii"),
                keep_blank_values=True,
                strict_parsing=True,
            )
            offset = int(tokens.get("o", ["0"])[0])
            reverse = tokens.get("r", ["0"])[0]
            position = tokens.get("p", [None])[0]
            if (
                set(tokens) <= {"o", "r", "p"}
                and 0 <= offset <= self.offset_cutoff
                and reverse in ("0", "1")
                and (position is None or position.lstrip("-").isdigit())
                and (position is None or abs(int(position)) < 2**63)
            ):
                cursor = Cursor(offset=offset, reverse=reverse == "1", position=position)
        if cursor is None:
            message = "cursor is not one this API gave out (use next or previous as is)."
            raise ValidationFailed(message, details={"cursor": [message]})
        return cursor
