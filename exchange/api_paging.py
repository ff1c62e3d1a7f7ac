"""Cursor pagination of the API's lists, strict about its parameters.

DRF's ``CursorPagination`` answers a bad cursor with 404 (as if the list did not exist) and
clamps or ignores a bad page size; a client then pages through something other than it asked
for. Here both are a 400 ``invalid`` naming the parameter, and the document declares the
parameters with their bounds.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request

from exchange.errors import ValidationFailed


class StrictCursorPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    max_page_size = 500
    page_size_query_param = "limit"

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound as error:
            raise ValidationFailed(
                "Invalid cursor: send back the cursor of a page's next or previous link.",
                details={self.cursor_query_param: ["Invalid cursor."]},
            ) from error

    def get_page_size(self, request: Request) -> int:
        name = self.page_size_query_param
        raw = request.query_params.get(name) if name else None
        if raw is None:
            return self.page_size
        high = self.max_page_size or self.page_size
        message = f"{name} must be an integer from 1 to {high}."
        try:
            value = int(raw)
        except ValueError as error:
            raise ValidationFailed(message, details={name: [message]}) from error
        if not 1 <= value <= high:
            raise ValidationFailed(message, details={name: [message]})
        return value

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "The cursor of a page's `next` or `previous` link, as given.",
                "schema": {"type": "string"},
            }
        ]
        if self.page_size_query_param:
            parameters.append(
                {
                    "name": self.page_size_query_param,
                    "required": False,
                    "in": "query",
                    "description": f"Items per page (default {self.page_size}).",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": self.max_page_size or self.page_size,
                        "default": self.page_size,
                    },
                }
            )
        return parameters
