"""Error pages: JSON under /api/, HTML elsewhere — in every mode, DEBUG included."""

from __future__ import annotations

import logging
import sys

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from exchange.api_errors import error_body
from exchange.outages import dependency_outage, unavailable_response

logger = logging.getLogger(__name__)

# What a non-JSON client error under /api/ becomes (DRF's own answers are JSON already).
_API_ERRORS = {
    403: ("permission_denied", gettext_noop("You do not have permission to perform this action.")),
    404: ("not_found", gettext_noop("Not found.")),
    405: ("method_not_allowed", gettext_noop("Method not allowed.")),
}


def _is_api(request: HttpRequest) -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("not_found", _("Not found.")), status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    # reached for errors outside the view (a middleware saving the session, say)
    error = sys.exc_info()[1]
    if error is not None and dependency_outage(error):
        return unavailable_response(request)
    if _is_api(request):
        return JsonResponse(error_body("server_error", _("Internal server error.")), status=500)
    return render(request, "500.html", status=500)


class ErrorPagesMiddleware(MiddlewareMixin):
    """The site's own 404 page and the API's JSON errors under ``DEBUG`` too.

    ``handler404`` serves only when ``DEBUG`` is off; `make run` is ``DEBUG=true``, and a
    newcomer who mistypes a market should get the exchange's page, not Django's debug one. A URL
    that matches no route at all still gets Django's debug page outside /api/ (it lists the
    routes: what a developer wants), but under /api/ a bot always gets the one error shape.
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, Http404):
            return not_found(request, exception)
        if dependency_outage(exception):
            # PostgreSQL or Redis unreachable: 503 and a retry, never a 500 or the debug page
            # (the transaction, if any, was rolled back: nothing of the request was written)
            logger.warning(
                "%s %s: dependency unavailable: %s: %s",
                request.method, request.path, type(exception).__name__, exception,
            )  # fmt: skip
            return unavailable_response(request)
        return None

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        known = _API_ERRORS.get(response.status_code)
        if (
            known is None
            or not _is_api(request)
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        code, message = known
        replacement = JsonResponse(error_body(code, _(message)), status=response.status_code)
        if response.has_header("Allow"):
            replacement["Allow"] = response["Allow"]
        return replacement
