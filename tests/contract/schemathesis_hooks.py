"""Schemathesis hooks for ``test_schemathesis.py``: what the document cannot state.

- ``cursor`` is opaque: its only valid values are those of a page's ``next``/``previous`` link
  (``tests/test_api_inputs.py`` checks that any other is a 400 naming it). A generated one is
  dropped, so that a valid request is not sent with a cursor no server could accept.
- A time window runs forwards: ``until`` after ``since``, ``end`` not before ``start`` (one
  parameter cannot refer to another in OpenAPI). A generated window the wrong way round is turned
  around; the server's 400 for it is tested on its own.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    if not query:
        return query
    query.pop("cursor", None)
    if "since" in query and "until" in query:
        query.pop("until")
    start, end = query.get("start"), query.get("end")
    if (
        isinstance(start, str)
        and isinstance(end, str)
        and _DATE.fullmatch(start)
        and _DATE.fullmatch(end)
        and end < start
    ):
        query["start"], query["end"] = end, start
    return query
