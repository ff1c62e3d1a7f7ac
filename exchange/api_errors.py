"""One error shape for the whole API: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from exchange.errors import ExchangeError
from exchange.logs import refusal_expected

_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "malformed_request",
    exceptions.ValidationError: "invalid",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details_object(details)}}


def details_object(details: Any) -> dict[str, Any]:
    """``details`` is always an object: field → messages for a validation error; a bare list
    of messages (an error of the whole body) goes under ``non_field_errors``, as DRF names it."""
    if not details:
        return {}
    if isinstance(details, dict):
        return dict(details)
    if isinstance(details, list | tuple):
        return {"non_field_errors": list(details)}
    return {"non_field_errors": [details]}


def message_of(detail: Any) -> str:
    """The first message of a validation error, naming its field (``price: ...``)."""
    if isinstance(detail, list) and detail:
        return message_of(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        inner = message_of(value)
        return inner if key in ("non_field_errors", "detail") else f"{key}: {inner}"
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ExchangeError):
        set_rollback()
        if exc.expected:
            refusal_expected(getattr(context.get("request"), "_request", None))
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None

    code = next((c for klass, c in _DRF_CODES.items() if isinstance(exc, klass)), "error")
    details: Any = {}
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail
        message = message_of(exc.detail)
    else:
        message = str(exc.detail)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    status_code = exc.status_code
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        status_code = status.HTTP_401_UNAUTHORIZED
    set_rollback()
    return Response(error_body(code, message, details), status=status_code, headers=headers)
