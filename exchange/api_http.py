"""HTTP details of the API that no single view owns: chunked request bodies, rate-limit headers.

Every answer under /api/ carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (``exchange.api_throttles``: what the throttles counted, or, for an answer
given before they ran, where the caller stands), and a 429 ``Retry-After``.

A request body sent with ``Transfer-Encoding: chunked`` has no ``Content-Length``; Django's ASGI
handler reads it in full, but DRF takes a missing length for an empty body, so an order sent that
way was read as ``{}``. The middleware gives such a request the length of what was received, so
it is parsed like any other (its size still bounded by ``DATA_UPLOAD_MAX_MEMORY_SIZE``).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from exchange.api_throttles import rate_limit_headers, rate_limit_peek


class ApiHttpMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.path.startswith("/api/")
            and "CONTENT_LENGTH" not in request.META
            and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            # reads the whole body now (Django refuses one past DATA_UPLOAD_MAX_MEMORY_SIZE)
            request.META["CONTENT_LENGTH"] = str(len(request.body))
        response = self.get_response(request)
        if request.path.startswith("/api/"):
            headers = rate_limit_headers(request)
            if not headers:
                rate_limit_peek(request)
                headers = rate_limit_headers(request)
            for name, value in headers.items():
                response.headers.setdefault(name, value)
            if response.status_code == 429 and "Retry-After" not in response.headers:
                response["Retry-After"] = str(max(int(headers.get("RateLimit-Reset", "1")), 1))
        return response
