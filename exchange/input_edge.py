"""NUL and other control characters refused at the edge: 400, before any view or query.

In the URL (path and query string, raw or percent-encoded: ``/api/v1/markets/%00/book``,
``?market=%00``) by ``InputEdgeMiddleware``; in JSON bodies by ``JSONParser`` (the API's parser;
the order fast path calls ``controls_refuse`` the same way). PostgreSQL cannot store a NUL in
text (it was a 500) and no field of this API means a control character; in bodies tab, newline
and carriage return are text.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.translation import gettext
from rest_framework import parsers
from rest_framework.exceptions import ParseError

# C0 controls and DEL; in bodies tab, newline and carriage return are text.
_URL_CONTROLS = re.compile(rb"[\x00-\x1f\x7f]")
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MAX_DEPTH = 32


def controls_find(data: Any, path: str = "", depth: int = 0) -> str | None:
    """The path ("body", "items.2.name", a key) of the first string in ``data`` (parsed JSON)
    holding a control character, else None."""
    if depth > _MAX_DEPTH:
        return None  # the parser's own nesting limit applies first
    if isinstance(data, str):
        return (path or "body") if _TEXT_CONTROLS.search(data) else None
    if isinstance(data, dict):
        for key, item in data.items():
            name = f"{path}.{key}" if path else str(key)
            if _TEXT_CONTROLS.search(str(key)):
                return path or "body"
            found = controls_find(item, name, depth + 1)
            if found:
                return found
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found = controls_find(item, f"{path}.{index}" if path else str(index), depth + 1)
            if found:
                return found
    return None


def controls_refuse(data: Any) -> Any:
    """``data`` as is, or ``ParseError`` (400 ``malformed_request``) naming where a control
    character is."""
    where = controls_find(data)
    if where is not None:
        raise ParseError(f"Control characters are not allowed (in {_printable(where)}).")
    return data


def _printable(text: str) -> str:
    return _TEXT_CONTROLS.sub("?", text)[:100]


# The message of a body nested deeper than the parsers' recursion allows (both order paths).
TOO_DEEP = "JSON parse error - nested too deeply."


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing control characters in any string of the body."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return controls_refuse(super().parse(stream, media_type, parser_context))
        except RecursionError:  # "[[[[…" a few hundred thousand deep: Python's stack, not ours
            raise ParseError(TOO_DEEP) from None


class InputEdgeMiddleware:
    """400 for a request whose path or query string holds a control character (raw or
    percent-encoded: ``/api/v1/markets/%00/book``, ``?market=%00``), before any view, query or
    log line sees it. Sync and async without a thread hop of its own: the check does no I/O."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return self._refused(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return self._refused(request) or await self.get_response(request)

    def _refused(self, request: HttpRequest) -> HttpResponse | None:
        raw_path = request.META.get("PATH_INFO", "").encode("utf-8", "surrogateescape")
        query = request.META.get("QUERY_STRING", "").encode("latin-1", "replace")
        if _URL_CONTROLS.search(raw_path) or _URL_CONTROLS.search(
            unquote_to_bytes(query.replace(b"+", b" "))
        ):
            return self._refuse(request)
        return None

    @staticmethod
    def _refuse(request: HttpRequest) -> HttpResponse:
        message = gettext("Control characters are not allowed in the address.")
        if request.path_info.startswith("/api/"):
            body = {"error": {"code": "malformed_request", "message": message, "details": {}}}
            return JsonResponse(body, status=400)
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
