"""HTTP details of the API that no single view owns: chunked request bodies, rate-limit headers.

A request body sent with ``Transfer-Encoding: chunked`` has no ``Content-Length``; Django's ASGI
handler reads it in full, but DRF takes a missing length for an empty body, so an order sent that
way was read as ``{}``. The middleware gives such a request the length of what was received, so
it is parsed like any other (its size still bounded by ``DATA_UPLOAD_MAX_MEMORY_SIZE``).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


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
        return self.get_response(request)
