"""The OpenAPI document is the API: every operation declares every status it can answer.

``ExchangeAutoSchema`` (``DEFAULT_SCHEMA_CLASS``) adds to each operation the error statuses its
view can answer, each with the one ``Error`` component (``exchange.api_errors``), from what the
view is: a body (400 invalid or malformed_request, 415), query parameters (400), a path parameter
or a ``market`` filter (404), authentication and scopes (401, 403), content negotiation (406) and
the throttles (429). What only some operations answer (409, 422, 502, 503) they declare
themselves with ``error_response``. ``tests/test_api_contract.py`` generates the document with
warnings as errors, and Schemathesis checks it against a live server.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from exchange.api_inputs import StrictSerializer

DECIMAL_PATTERN = r"^-?\d+(\.\d+)?$"


def decimal_string(help_text: str = "", **options: Any) -> serializers.RegexField:
    """A decimal as a JSON string (``"8.01"``): prices, quantities and amounts are never floats."""
    return serializers.RegexField(DECIMAL_PATTERN, help_text=help_text, **options)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Stable and machine-readable; the table of codes is docs/api-errors.md."
    )
    message = serializers.CharField(help_text="For people, in the request's language.")
    details = serializers.DictField(
        help_text="Always an object. For `invalid`: field → list of messages (an error of the "
        "whole body under `non_field_errors`); otherwise what the error is about."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()

    class Meta:
        ref_name = "Error"


ERROR_EXAMPLE = OpenApiExample(
    "invalid",
    value={
        "error": {
            "code": "invalid",
            "message": "timeInForce: Unknown field.",
            "details": {"timeInForce": ["Unknown field."]},
        }
    },
    response_only=True,
)


def error_response(description: str) -> OpenApiResponse:
    """An error status of one operation: the ``Error`` body; ``description`` lists its codes."""
    return OpenApiResponse(ErrorSerializer, description=description)


ERRORS = {
    "400": "`invalid` (details name each refused field or parameter, an unknown field "
    "included) or `malformed_request` (not JSON).",
    "401": "`not_authenticated` (no credentials) or `authentication_failed` (an invalid, "
    "expired or revoked API key).",
    "403": "`permission_denied`: the API key lacks the scope this needs, or the account may "
    "not do this.",
    "404": "`*_not_found` (`market_not_found`, `order_not_found`, …): nothing of yours here.",
    "406": "`not_acceptable`: the `Accept` header allows no JSON.",
    "415": "`unsupported_media_type`: send `Content-Type: application/json`.",
    "429": "`rate_limited`: wait `Retry-After` seconds.",
}


class ExchangeAutoSchema(AutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        error = self.resolve_serializer(ErrorSerializer(), "response").ref
        for status in self._error_statuses(operation):
            responses.setdefault(
                status,
                {
                    "description": ERRORS[status],
                    "content": {"application/json": {"schema": error}},
                },
            )
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False  # an unknown field is refused
        return schema

    def _error_statuses(self, operation: dict[str, Any]) -> list[str]:
        parameters = operation.get("parameters", [])
        query = [p["name"] for p in parameters if p["in"] == "query"]
        has_path = any(p["in"] == "path" for p in parameters)
        has_body = "requestBody" in operation
        public = all(isinstance(p, AllowAny) for p in self.view.get_permissions())
        authenticates = bool(self.view.get_authenticators())
        csv_only = all(
            "application/json" not in response.get("content", {"application/json": None})
            for code, response in operation["responses"].items()
            if code.startswith("2")
        )
        statuses = []
        if has_body or query:
            statuses.append("400")
        if authenticates:
            statuses.append("401")
        if not public:
            statuses.append("403")
        if has_path or "market" in query:
            statuses.append("404")
        if not csv_only:
            statuses.append("406")
        if has_body:
            statuses.append("415")
        if self.view.get_throttles():
            statuses.append("429")
        return statuses
