"""Prometheus metrics: what the benchmarks measure, live, for an operator.

Definitions only, plus the ``/metrics`` view and the ASGI edge that times every HTTP request.
With ``PROMETHEUS_MULTIPROC_DIR`` set (several uvicorn workers, the runner and Celery as separate
processes: see docs/operations.md) prometheus-client keeps each process's values in files there
and a scrape adds them up; without it the values are this process's own.

Label values are bounded sets (a route class, a status class, a market symbol, a channel): never
a path, a user or an id.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

# Seconds; an order's round trip lives between a millisecond and the runner's wait (2 s).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
    1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

HTTP_SECONDS = Histogram(
    "exchange_http_request_seconds",
    "HTTP request to the end of its answer, by route class (order: one order with the engine's "
    "result, order_batch, gateway, api, web) and status class.",
    ["route", "status"],
    buckets=LATENCY_BUCKETS,
)
RUNNER_BATCH_COMMANDS = Histogram(
    "exchange_runner_batch_commands",
    "Commands the engine runner applied in one transaction.",
    ["market"],
    buckets=BATCH_BUCKETS,
)
RUNNER_BATCH_SECONDS = Histogram(
    "exchange_runner_batch_seconds",
    "One runner batch: read, match, write and commit.",
    ["market"],
    buckets=LATENCY_BUCKETS,
)
RUNNER_COMMIT_SECONDS = Histogram(
    "exchange_runner_commit_seconds",
    "The commit of a runner batch (its durable point).",
    ["market"],
    buckets=LATENCY_BUCKETS,
)
RUNNER_LAG_SECONDS = Gauge(
    "exchange_runner_lag_seconds",
    "Age of the oldest pending command when the runner's last batch of the market began.",
    ["market"],
    multiprocess_mode="livemax",
)
FEED_LAG_SECONDS = Histogram(
    "exchange_feed_delivery_lag_seconds",
    "From the runner's publication of a market's public changes to their hand-over to the "
    "process's websocket connections (once per process and batch; channel: market).",
    ["channel"],
    buckets=LATENCY_BUCKETS,
)
WEBSOCKET_CONNECTIONS = Gauge(
    "exchange_websocket_connections",
    "Open websocket connections.",
    multiprocess_mode="livesum",
)
GATEWAY_ADDED_SECONDS = Histogram(
    "exchange_gateway_added_latency_seconds",
    "Time to first token through the gateway minus the upstream's own (what the exchange adds).",
    buckets=LATENCY_BUCKETS,
)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def metrics_text() -> bytes:
    """The exposition of every process (multiprocess mode) or of this one."""
    if _multiprocess():
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _may_scrape(request: HttpRequest) -> bool:
    """With ``METRICS_TOKEN`` set, its bearer only; without it, loopback callers only."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _may_scrape(request):
        return HttpResponse(
            b"metrics: forbidden (METRICS_TOKEN bearer, or a loopback caller)\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)


# --- the HTTP edge: request id and timing ---------------------------------------------------------
REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")

# time.monotonic() when the request being served arrived (0.0 outside one)
_REQUEST_ARRIVED: ContextVar[float] = ContextVar("request_arrived", default=0.0)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def route_class(method: str, path: str) -> str:
    if path.startswith("/api/v1/orders") and method == "POST":
        return "order_batch" if path.rstrip("/").endswith("/batch") else "order"
    if path.startswith("/v1/"):
        return "gateway"
    if path.startswith("/api/"):
        return "api"
    return "web"


def request_id_of(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is a sane token, else a new one."""
    for name, value in scope.get("headers") or ():
        if name == REQUEST_ID_HEADER and _REQUEST_ID.match(value):
            return value.decode()
    return uuid.uuid4().hex


class RequestEdge:
    """Outermost HTTP layer: gives each request an id (bound to every log line it causes, and
    returned as ``X-Request-ID``) and times it to the end of its answer."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        arrived = _REQUEST_ARRIVED.set(time.monotonic())
        request_id = request_id_of(scope)
        status = 0
        header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                HTTP_SECONDS.labels(
                    route_class(scope.get("method", ""), scope.get("path", "")),
                    f"{status // 100}xx",
                ).observe(time.perf_counter() - started)
            await send(message)

        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            _REQUEST_ARRIVED.reset(arrived)


class WebsocketCount:
    """Counts open websocket connections (``exchange_websocket_connections``): from the accept
    the application sends to the end of the connection's application instance."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                WEBSOCKET_CONNECTIONS.inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                WEBSOCKET_CONNECTIONS.dec()


def gateway_first_token(upstream_first_token_seconds: float) -> None:
    """The gateway sends a stream's first token: what it added to the upstream's own time to
    first token (from the request's arrival; nothing outside a request)."""
    arrived = _REQUEST_ARRIVED.get()
    if arrived:
        added = time.monotonic() - arrived - upstream_first_token_seconds
        GATEWAY_ADDED_SECONDS.observe(max(added, 0.0))


def current_request_id() -> str | None:
    """The id of the request this code runs for (None outside one)."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None
