"""Dependency outages: what a request answers when PostgreSQL or Redis cannot be reached.

An unreachable database or Redis is not a bug in the request: the client gets
``503 service_unavailable`` with ``Retry-After`` (the API's JSON error shape under /api/, the
site's 503 page elsewhere), never a 500 or a debug page, and the instance recovers by itself
once the service answers again (no restart). Each outage is logged once when it begins and once
when it ends (``OutageLog``), not a traceback per request.

What degrades instead of failing (see README, "Dependency outages"): the cache
(``exchange.cache``) treats Redis errors as misses, so public market data is read from the
database and DRF's throttles let requests through; the runner keeps committing and publishes
again when Redis returns.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader
from django.utils.translation import gettext as _
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# What a client is told to wait before retrying (seconds). A database or Redis failover takes
# tens of seconds; a retry storm from every bot at once would not help it.
RETRY_AFTER_SECONDS = 5

# Errors that mean "a service we depend on is unreachable or refused the connection", not "this
# request is wrong". Django wraps psycopg's errors (the pool's PoolTimeout included) in its own
# OperationalError / InterfaceError; a lost connection mid-query is one of those too.
_DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,  # the OS refused or reset the connection (channel layer, sockets)
    TimeoutError,
)


def dependency_outage(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is an unreachable database or Redis.

    Only operational failures: an integrity or data error from PostgreSQL is a bug or a race
    and stays a 500 (``DatabaseError`` subclasses other than the two above)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _DEPENDENCY_ERRORS) and not _is_data_error(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_data_error(error: BaseException) -> bool:
    # Django maps every psycopg error onto its own classes; OperationalError also covers a
    # cancelled statement or a deadlock — transient, so 503 and a retry are right for those too.
    return isinstance(error, DatabaseError) and not isinstance(
        error, OperationalError | InterfaceError
    )


def unavailable_body() -> dict[str, dict[str, object]]:
    return {
        "error": {
            "code": "service_unavailable",
            "message": _("The service is temporarily unavailable; please retry shortly."),
            "details": {"retry_after": RETRY_AFTER_SECONDS},
        }
    }


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with ``Retry-After``: JSON under /api/ (and for clients asking for JSON), the 503
    page elsewhere. Renders without the database or the cache."""
    wants_json = request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )
    if wants_json:
        response: HttpResponse = JsonResponse(unavailable_body(), status=503)
    else:
        # the template loads nothing from the database (no context processors): plain render
        response = HttpResponse(loader.render_to_string("503.html", request=None), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class OutageLog:
    """Logs a dependency's outage once when it begins (WARNING, with the error) and once when it
    ends (INFO, with its length) instead of a line or a traceback per failed call."""

    def __init__(self, name: str, log: logging.Logger | None = None) -> None:
        self.name = name
        self.logger = log or logger
        self.since: float | None = None
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.since is not None:
                return
            self.since = time.monotonic()
        self.logger.warning("%s unreachable: %s: %s", self.name, type(error).__name__, error)

    def succeeded(self) -> None:
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            lasted, failures = time.monotonic() - self.since, self.failures
            self.since, self.failures = None, 0
        self.logger.info(
            "%s reachable again after %.1f s (%d failed calls)", self.name, lasted, failures
        )
