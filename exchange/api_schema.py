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
from drf_spectacular.plumbing import force_instance
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from exchange.api_inputs import StrictSerializer

DECIMAL_PATTERN = r"^-?\d+(\.\d+)?$"
# What exchange.input_edge refuses (400 malformed_request): control characters in the address,
# and in JSON strings all but tab, newline and carriage return.
URL_TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
BODY_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# The dates a client names, 2000-01-01 to 9998-12-31 (exchange.input_bounds DATE_MIN/DATE_MAX).
DATE_PATTERN = r"^(2\d{3}|[3-8]\d{3}|9[0-8]\d{2}|99[0-8]\d)-\d{2}-\d{2}$"


def decimal_string(help_text: str = "", **options: Any) -> serializers.RegexField:
    """A decimal as a JSON string (``"8.01"``): prices, quantities and amounts are never floats."""
    return serializers.RegexField(DECIMAL_PATTERN, help_text=help_text, **options)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Stable and machine-readable; the table of codes is in docs/api.md (Errors)."
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


INVALID_EXAMPLE = {
    "error": {
        "code": "invalid",
        "message": "timeInForce: Unknown field.",
        "details": {"timeInForce": ["Unknown field."]},
    }
}


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
    "503": "`service_unavailable`: the database or Redis cannot be reached; retry after "
    "`Retry-After` seconds (nothing was changed).",
}

_INTEGER = {"type": "integer", "minimum": 0}
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": {
        "schema": _INTEGER,
        "description": "Requests allowed per window: per API key, or per IP address without one.",
    },
    "RateLimit-Remaining": {"schema": _INTEGER, "description": "Left in this window."},
    "RateLimit-Reset": {"schema": _INTEGER, "description": "Seconds until the window has room."},
}
RETRY_AFTER_HEADER = {"Retry-After": {"schema": _INTEGER, "description": "Seconds to wait."}}


# OpenAPI links: what an answer's id opens next (clients and Schemathesis' stateful phase follow
# them: an order placed is read and cancelled by its id and by its client_order_id).
LINKS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "orders_place": [
        ("order_get", {"order_id": "$response.body#/id"}),
        ("order_cancel", {"order_id": "$response.body#/id"}),
        ("order_get_by_client_id", {"client_order_id": "$response.body#/client_order_id"}),
        ("order_cancel_by_client_id", {"client_order_id": "$response.body#/client_order_id"}),
    ],
    "v1_api_keys_create": [("v1_api_keys_destroy", {"key_id": "$response.body#/id"})],
    "provider_endpoints_create": [
        ("provider_endpoints_get", {"endpoint_id": "$response.body#/id"}),
        ("provider_endpoints_update", {"endpoint_id": "$response.body#/id"}),
        ("provider_endpoints_delete", {"endpoint_id": "$response.body#/id"}),
    ],
}


_ORDER_EXAMPLE = {
    "market": "QWEN3.6-PLUS-OUT-CNY",
    "side": "buy",
    "type": "limit",
    "price": "8.01",
    "quantity": "2.5",
    "time_in_force": "IOC",
    "client_order_id": "bot-7-000123",
}
# Request bodies as a bot sends them (by operationId).
REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "orders_place": _ORDER_EXAMPLE,
    "v1_orders_batch_create": {
        "orders": [_ORDER_EXAMPLE, {**_ORDER_EXAMPLE, "price": "8.00", "client_order_id": None}]
    },
    "v1_capacity_create": {
        "market": "QWEN3.6-PLUS-OUT-CNY",
        "quantity": "500",
        "available_until": "2026-12-31T00:00:00.000Z",
        "ask_price": "9.50",
    },
    "v1_api_keys_create": {
        "name": "trading bot",
        "scopes": ["read", "trade"],
        "expires_at": "2030-06-30T00:00:00.000Z",
    },
    "v1_deposits_create": {"currency": "CNY", "amount": "100.00", "client_request_id": "dep-1"},
    "v1_withdrawals_create": {"currency": "CNY", "amount": "50.00", "client_request_id": "wd-1"},
    "provider_endpoints_create": {
        "market": "QWEN3.6-PLUS-OUT-CNY",
        "base_url": "https://api.example.com/v1",
        "api_key": "sk-upstream-secret",
        "model_id": "qwen3.6-plus",
        "concurrency_limit": 8,
    },
}


class ExchangeAutoSchema(AutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        for parameter in operation.get("parameters", []):
            _refuse_controls(parameter.get("schema", {}), URL_TEXT_PATTERN)
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
        example = REQUEST_EXAMPLES.get(operation["operationId"])
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if example is not None and body is not None:
            body.setdefault("examples", {"bot": {"value": example}})
        invalid = responses["400"]["content"]["application/json"]
        if "requestBody" in operation and "examples" not in invalid:
            invalid["examples"] = {
                "invalid": {"value": INVALID_EXAMPLE, "summary": "An unknown field, named"}
            }
        for status, response in responses.items():
            if status.startswith("2") and operation["operationId"] in LINKS:
                response["links"] = {
                    target: {"operationId": target, "parameters": parameters}
                    for target, parameters in LINKS[operation["operationId"]]
                }
            if self.view.get_throttles():  # rate-limited answers say where the caller stands
                headers = response.setdefault("headers", {})
                headers.update(RATE_LIMIT_HEADERS)
                if status in ("429", "503"):
                    headers.update(RETRY_AFTER_HEADER)
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _map_serializer_field(self, field: Any, direction: Any, *args: Any, **kwargs: Any) -> Any:
        schema = super()._map_serializer_field(field, direction, *args, **kwargs)
        if direction == "request" and isinstance(schema, dict):
            _refuse_controls(schema, BODY_TEXT_PATTERN)
        return schema

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False  # an unknown field is refused
        return schema

    def _body_fields(self) -> set[str]:
        serializer = force_instance(self.get_request_serializer())
        fields = getattr(serializer, "fields", None)
        return set(fields) if fields is not None else set()

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
        # any address may carry a control character (exchange.input_edge): 400 everywhere
        statuses = ["400"]
        if authenticates:
            statuses.append("401")
        if not public:
            statuses.append("403")
        if has_path or "market" in query or (has_body and "market" in self._body_fields()):
            statuses.append("404")
        if not csv_only:
            statuses.append("406")
        if has_body:
            statuses.append("415")
        if self.view.get_throttles():
            statuses.append("429")
        statuses.append("503")  # exchange.outages: a dependency down, every operation
        return statuses


def _refuse_controls(schema: dict[str, Any], pattern: str) -> None:
    """A free text string (no pattern, enum or format of its own) refuses control characters;
    a date is within the bounds the API takes."""
    if schema.get("type") == "string" and schema.get("format") == "date":
        schema.setdefault("pattern", DATE_PATTERN)
    elif schema.get("type") == "string" and not {"pattern", "enum", "format"} & set(schema):
        schema["pattern"] = pattern
    elif schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        _refuse_controls(schema["items"], pattern)
