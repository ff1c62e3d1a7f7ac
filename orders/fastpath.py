"""Order intake for bots, in front of Django: ``POST /api/v1/orders`` and ``/orders/batch``.

A bot's order request is small and the same every time, yet through Django it cost ~3 ms of
CPU before the view ran (request object, middleware, DRF's request, negotiation, rendering) and
the view another ~10 ms (its own queries, its own transaction, its own wait). On a 2-core
machine that capped the API at tens of orders per second (docs/performance.md).

``OrderFastPath`` wraps the ASGI application. It takes a request only when it is exactly what
a bot sends: ``POST`` to one of the two paths, over HTTPS (or with ``SECURE_SSL_REDIRECT`` off),
for an allowed host, with a JSON body of a declared length and an ``Authorization: Bearer``
API key. Everything else, browser sessions included (CSRF), goes to Django unchanged.

The requests it takes are handed to the intake threads of the process (``IntakeWorker``), which
does what the DRF views do with the same code (``ApiKeyAuthentication``, ``HasScope``, the
configured throttles, ``OrderBodySerializer`` and ``order_request_parse``, the exception
handler's error bodies), but for all waiting requests at once:

- every single order that arrived meanwhile is placed in one transaction
  (``orders.services._place_group``: each order still gets its own answer, exactly as if alone);
- the orders still pending are re-read in one query when the runner announces a commit
  (``exchange.runner.progress``), with their fills in one more, and each request is answered as
  soon as all its orders have left ``pending`` or ``ORDER_WAIT_SECONDS`` have passed (then it
  is answered with ``pending``, and the order is still processed, as through Django);
- an API key is looked up once per ``API_KEY_CACHE_SECONDS`` per process, not per request, so a
  revoked or expired key keeps working here for at most that long.

Responses are the DRF views' responses, byte for byte in content (``tests/orders/
test_fastpath.py`` compares them), with the headers Django's security middleware adds.
``ORDER_FAST_PATH=false`` turns it off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.db.models import Q
from django.http import JsonResponse
from django.http.request import split_domain_port, validate_host
from rest_framework import exceptions

from accounts.authentication import ApiKeyAuthentication, HasScope
from exchange.api_errors import error_body, exception_handler
from exchange.api_throttles import (
    RATE_LIMIT_ATTRIBUTE,
    rate_limit_headers,
    rate_limit_peek,
    rate_limit_record,
)
from exchange.db import array_param, server_bound_cursor
from exchange.errors import ExchangeError
from exchange.input_edge import TOO_DEEP, controls_refuse
from exchange.outages import RETRY_AFTER_SECONDS, dependency_outage, unavailable_body
from exchange.runner.progress import FALLBACK_SECONDS, progress_listen, progress_unlisten
from orders import services
from orders.api import (
    OrderBatchApi,
    OrderListApi,
    batch_answer,
    batch_parse,
    order_with_fills_json,
)
from orders.bodies import OrderBodySerializer, order_body_parse
from orders.intake import GROUP_LIMIT
from orders.models import Order, OrderStatus, Trade

logger = logging.getLogger(__name__)

# The order fields the engine runner writes (exchange.runner.core), re-read while waiting.
RUNNER_FIELDS = (
    "status",
    "filled_lots",
    "cost",
    "fee",
    "cancel_reason",
    "hold_remaining",
    "engine_seq",
    "updated_at",
)
PATHS = {"/api/v1/orders": OrderListApi, "/api/v1/orders/batch": OrderBatchApi}
KEY_CACHE_LIMIT = 10_000
# How much longer than ORDER_WAIT_SECONDS a request waits for the intake threads at most.
ANSWER_GRACE = 30.0

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class _Call:
    """One HTTP request in the intake thread's hands."""

    __slots__ = (
        "answered",
        "auth",
        "authorization",
        "body",
        "created",
        "deadline",
        "future",
        "loop",
        "meta",
        "orders",
        "parsed",
        "placed",
        "rate_limit",
        "results",
        "secure",
        "user",
        "view",
        "waiting",
    )

    def __init__(
        self,
        view: type,
        authorization: bytes,
        body: bytes,
        secure: bool,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Answer],
        meta: dict[str, str] | None = None,
    ) -> None:
        self.view = view
        self.meta = meta or {}  # REMOTE_ADDR and X-Forwarded-For, for the per-IP rate limit
        self.authorization = authorization
        self.body = body
        self.secure = secure
        self.loop = loop
        self.future = future
        self.user: Any = None
        self.auth: Any = None  # the API key
        self.rate_limit: tuple[int, int, int] | None = None  # for the RateLimit-* headers
        self.orders: list[Order] = []  # placed, as last read
        self.created = False
        self.parsed: list[Any] = []  # a batch's (position, request)
        self.placed: list[Any] = []  # a batch's outcomes
        self.results: list[Any] = []  # a batch's results so far
        self.deadline = 0.0
        self.answered = False  # an answer is on its way to the client
        self.waiting = False  # placed, in the poller's hands


def _settle(future: asyncio.Future[Answer], answer: Answer) -> None:
    if not future.done():
        future.set_result(answer)


class IntakeWorker:
    """Per process: ``ORDER_INTAKE_THREADS`` intake threads (placements grouped) and a poller
    thread (waits answered from shared reads), each with its own database connection, so reads
    overlap placements."""

    def __init__(self) -> None:
        self._intake = threading.Condition()
        self._incoming: list[_Call] = []
        self._polling = threading.Condition()
        self._waiting: list[_Call] = []
        self._moved = False
        self._keys: dict[bytes, tuple[float, Any, Any]] = {}
        self._local = threading.local()  # a serializer per intake thread
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._intake_loop, name=f"order-intake-{n}", daemon=True)
            for n in range(settings.ORDER_INTAKE_THREADS)
        ]
        self._threads.append(
            threading.Thread(target=self._poll_loop, name="order-wait", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """End the threads once they are idle: the intake threads first, then the poller once
        every request they placed has been answered."""
        self._stopping = True
        with self._intake:
            self._intake.notify_all()
        for thread in self._threads[:-1]:
            thread.join(timeout=10)
        with self._polling:
            self._polling.notify_all()
        self._threads[-1].join(timeout=10)
        progress_unlisten(self._progress)

    def submit(self, call: _Call) -> None:
        with self._intake:
            self._incoming.append(call)
            self._intake.notify()

    def _progress(self) -> None:
        with self._polling:
            self._moved = True
            self._polling.notify()

    # --- the intake thread --------------------------------------------------------------------
    def _intake_loop(self) -> None:
        while True:
            with self._intake:
                while not self._incoming and not self._stopping:
                    self._intake.wait()
                calls, self._incoming = self._incoming, []
            if not calls:  # stopping
                connection.close()
                return
            _session_check()
            try:
                self._accept(calls)
            except Exception as error:  # the database went away: answer, reconnect next round
                _failure_log("order intake failed", error)
                for call in calls:
                    if not call.answered and not call.waiting:  # placed ones get their answer
                        self._answer(call, _failure_answer(error))
                connection.close()

    def _accept(self, calls: list[_Call]) -> None:
        admitted: list[_Call] = []
        for call in calls:
            try:
                self._admit(call)
                admitted.append(call)
            except Exception as error:
                self._rate_limit_peek(call)
                self._answer(call, _error_answer(error))
        singles: list[tuple[_Call, Any]] = []
        markets: dict[str, Any] = {}  # read once per round
        for call in self._throttled(admitted):
            try:
                data = _body_json(call.body)  # after the throttles, as DRF reads request.data
                if call.view is OrderBatchApi:
                    self._place_batch(call, data, markets)
                else:
                    singles.append((call, order_body_parse(data, markets, self._serializer())))
            except Exception as error:
                self._answer(call, _error_answer(error))
        for start in range(0, len(singles), GROUP_LIMIT):
            group = singles[start : start + GROUP_LIMIT]
            try:
                outcomes = services._place_group([(c.user, r) for c, r in group])
            except Exception as error:  # nothing of this group was placed
                _failure_log("order intake failed", error)
                for call, _ in group:
                    self._answer(call, _error_answer(error))
                continue
            for (call, _), outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    self._answer(call, _error_answer(outcome))
                else:
                    call.orders, call.created = [outcome[0]], outcome[1]
                    self._wait_or_answer(call)

    def _serializer(self) -> OrderBodySerializer:
        body = getattr(self._local, "body", None)
        if body is None:
            body = self._local.body = OrderBodySerializer()
        return body

    def _admit(self, call: _Call) -> None:
        """Authenticate and check the scope, as the DRF view does."""
        request = SimpleNamespace(
            headers={"authorization": call.authorization},
            META={"HTTP_AUTHORIZATION": call.authorization},
            method="POST",
            user=None,
            auth=None,
        )
        cached = self._keys.get(call.authorization)
        if cached is not None and cached[0] > time.monotonic():
            request.user, request.auth = cached[1], cached[2]
        else:
            found = ApiKeyAuthentication().authenticate(request)  # type: ignore[arg-type]
            if found is None:
                raise exceptions.NotAuthenticated()
            request.user, request.auth = found
            if len(self._keys) >= KEY_CACHE_LIMIT:
                self._keys.clear()
            expiry = time.monotonic() + settings.API_KEY_CACHE_SECONDS
            self._keys[call.authorization] = (expiry, *found)
        call.user, call.auth = request.user, request.auth
        permission = HasScope()
        if not permission.has_permission(request, call.view):  # type: ignore[arg-type]
            raise exceptions.PermissionDenied(permission.message)

    @staticmethod
    def _rate_limit_peek(call: _Call) -> None:
        """A call refused before the throttles (401, 403) still gets the RateLimit-* headers:
        its key's standing, or its address's without one, read without counting."""
        forwarded = call.meta.get("HTTP_X_FORWARDED_FOR")
        request = SimpleNamespace(
            user=call.user or AnonymousUser(),
            auth=call.auth,
            META=call.meta,
            headers={"x-forwarded-for": forwarded} if forwarded else {},
        )
        try:
            rate_limit_peek(request)
        except Exception:  # the cache is down: the refusal goes out without the headers
            logger.warning("rate limit headers of a refused order request", exc_info=True)
        call.rate_limit = getattr(request, RATE_LIMIT_ATTRIBUTE, None)

    def _throttled(self, admitted: list[_Call]) -> list[_Call]:
        """The view's throttles (DRF's ``SimpleRateThrottle``: same keys, same histories, so
        both paths count alike) for the whole round: one ``get_many`` and one ``set_many``
        instead of a read and a write per request. Answers the refused calls."""
        checks: list[tuple[_Call, Any]] = []
        for call in admitted:
            request = SimpleNamespace(user=call.user, auth=call.auth, META={})
            view = call.view()
            for throttle in view.get_throttles():
                if throttle.rate is None:
                    continue
                throttle.key = throttle.get_cache_key(request, view)
                if throttle.key is not None:
                    checks.append((call, throttle))
        if not checks:
            return admitted
        store = checks[0][1].cache
        histories = store.get_many({t.key for _, t in checks})
        changed: dict[str, tuple[list[float], int]] = {}
        waits: dict[int, list[float | None]] = {}
        for call, throttle in checks:
            history = list(
                changed[throttle.key][0]
                if throttle.key in changed
                else histories.get(throttle.key, [])
            )
            now = throttle.timer()
            while history and history[-1] <= now - throttle.duration:
                history.pop()
            throttle.history, throttle.now = history, now
            if len(history) >= throttle.num_requests:
                waits.setdefault(id(call), []).append(throttle.wait())
            else:
                history.insert(0, now)
                changed[throttle.key] = (history, throttle.duration)
            rate_limit_record(call, throttle.num_requests, history, now, throttle.duration)
        for duration in {d for _, d in changed.values()}:
            store.set_many({k: h for k, (h, d) in changed.items() if d == duration}, duration)
        allowed = []
        for call in admitted:
            if id(call) in waits:
                wait = max((w for w in waits[id(call)] if w is not None), default=None)
                self._answer(call, _error_answer(exceptions.Throttled(wait)))
            else:
                allowed.append(call)
        return allowed

    def _place_batch(self, call: _Call, data: Any, markets: dict[str, Any]) -> None:
        call.results, call.parsed = batch_parse(data, markets)
        call.placed = services._place_group([(call.user, r) for _, r in call.parsed])
        call.orders = [o[0] for o in call.placed if not isinstance(o, Exception)]
        self._wait_or_answer(call)

    def _wait_or_answer(self, call: _Call) -> None:
        if any(o.status == OrderStatus.PENDING for o in call.orders):
            call.deadline = time.monotonic() + settings.ORDER_WAIT_SECONDS
            call.waiting = True
            with self._polling:
                self._waiting.append(call)
                self._polling.notify()  # its deadline and the fallback clock start now
        else:
            self._finish(call, {})

    # --- the poller thread --------------------------------------------------------------------
    def _poll_loop(self) -> None:
        progress_listen(self._progress)
        last_read = time.monotonic()
        while True:
            with self._polling:
                while not self._moved:
                    if not self._waiting:
                        if self._stopping:
                            connection.close()
                            return
                        self._polling.wait()
                        continue
                    # nothing heard for a while (a lost message?) or a request's time is up
                    when = min(last_read + FALLBACK_SECONDS, *(c.deadline for c in self._waiting))
                    remaining = when - time.monotonic()
                    if remaining <= 0:
                        break
                    self._polling.wait(remaining)
                self._moved = False
                waiting = list(self._waiting)
            if not waiting:
                continue
            last_read = time.monotonic()
            _session_check()
            try:
                self._poll(waiting)
            except Exception as error:  # the database went away: answer, reconnect next round
                _failure_log("order wait failed", error)
                failed = {id(c) for c in waiting}
                with self._polling:
                    self._waiting = [c for c in self._waiting if id(c) not in failed]
                for call in waiting:
                    self._answer(call, _failure_answer(error))
                connection.close()

    def _poll(self, waiting: list[_Call]) -> None:
        """Re-read every waiting order in one query; answer the requests that are done."""
        pending = {o.id for c in waiting for o in c.orders if o.status == OrderStatus.PENDING}
        fresh = {row[0]: row[1:] for row in _moved_orders(pending)}
        now = time.monotonic()
        done: list[_Call] = []
        for call in waiting:
            call.orders = [_refreshed(o, fresh) for o in call.orders]
            if now >= call.deadline or all(o.status != OrderStatus.PENDING for o in call.orders):
                done.append(call)
        if not done:
            return
        finished = {id(c) for c in done}
        with self._polling:
            self._waiting = [c for c in self._waiting if id(c) not in finished]
        fills = _fills_of([c.orders[0] for c in done if c.view is OrderListApi])
        for call in done:
            self._finish(call, fills)

    def _finish(self, call: _Call, fills: dict[int, list[Trade]]) -> None:
        if call.view is OrderBatchApi:
            data: Any = batch_answer(call.results, call.parsed, call.placed, call.orders)
            self._answer(call, (200, [], orjson.dumps(data)))
            return
        order = call.orders[0]
        trades = fills.get(order.id) if order.filled_lots else None
        if order.filled_lots and trades is None:
            trades = _fills_of([order]).get(order.id, [])
        body = orjson.dumps(order_with_fills_json(order, trades))
        self._answer(call, (201 if call.created else 200, [], body))

    def _answer(self, call: _Call, answer: Answer) -> None:
        if call.answered:
            return
        call.answered = True
        status, headers, body = answer
        headers = _security_headers(call.secure) + headers
        limits = rate_limit_headers(call)
        headers += [(name.lower().encode(), value.encode()) for name, value in limits.items()]
        try:
            call.loop.call_soon_threadsafe(_settle, call.future, (status, headers, body))
        except RuntimeError:  # its event loop is gone (the server is shutting down)
            logger.warning("an order request's event loop closed before its answer")


def _client_meta(scope: Scope) -> dict[str, str]:
    """What DRF's throttles read to tell a client's address (``get_ident``)."""
    meta = {"REMOTE_ADDR": (scope.get("client") or ("",))[0]}
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            meta["HTTP_X_FORWARDED_FOR"] = value.decode("latin-1")
    return meta


def _body_json(body: bytes) -> Any:
    """The request body as DRF's JSONParser reads it (UTF-8, no NaN or Infinity)."""
    if not body:
        return {}
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
        return controls_refuse(data)  # as exchange.input_edge.JSONParser does
    except ValueError as error:  # UnicodeDecodeError included
        raise exceptions.ParseError(f"JSON parse error - {error}") from error
    except RecursionError:
        raise exceptions.ParseError(TOO_DEEP) from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _moved_orders(ids: set[int]) -> list[tuple[Any, ...]]:
    """(id, *RUNNER_FIELDS) of the orders ``ids`` that have left ``pending``: only what the
    runner changes (the rest of each order is as it was placed), and only for the orders that
    moved (the others would come back unchanged)."""
    placeholder, value = array_param(sorted(ids), "bigint")
    columns = ", ".join(RUNNER_FIELDS)
    with server_bound_cursor() as cursor:
        cursor.execute(
            f"SELECT id, {columns} FROM {Order._meta.db_table} "  # noqa: S608 (our names)  # nosec B608
            f"WHERE id = ANY({placeholder}) AND status <> %s",
            [value, OrderStatus.PENDING.value],
        )
        return cursor.fetchall()


def _refreshed(order: Order, fresh: dict[int, tuple[Any, ...]]) -> Order:
    values = fresh.get(order.id)
    if values is not None:
        for name, value in zip(RUNNER_FIELDS, values, strict=True):
            setattr(order, name, value)
    return order


def _fills_of(orders: list[Order]) -> dict[int, list[Trade]]:
    """The trades of the filled ``orders``, by order id, in one query."""
    ids = [o.id for o in orders if o.filled_lots]
    if not ids:
        return {}
    found: dict[int, list[Trade]] = {}
    trades = Trade.objects.select_related("market").filter(
        Q(taker_order_id__in=ids) | Q(maker_order_id__in=ids)
    )
    wanted = set(ids)
    for trade in trades.order_by("id"):
        for order_id in {trade.taker_order_id, trade.maker_order_id} & wanted:
            found.setdefault(order_id, []).append(trade)
    return found


def _error_answer(error: Exception) -> Answer:
    if isinstance(error, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        error.auth_header = ApiKeyAuthentication.keyword  # type: ignore[attr-defined]
    if isinstance(error, ExchangeError | exceptions.APIException):
        response = exception_handler(error, {})
        if response is not None:
            headers = [
                (name.lower().encode(), value.encode())
                for name, value in response.items()
                if name.lower() in ("retry-after", "www-authenticate")
            ]
            return response.status_code, headers, orjson.dumps(response.data)
    if not dependency_outage(error):
        logger.error("order intake refused a request", exc_info=error)
    return _failure_answer(error)


# An intake or wait thread keeps its database session between rounds; one idle this long is
# checked before use (a round trip), so that a session the database dropped meanwhile (a
# restart, a failover) is replaced instead of failing the next requests.
SESSION_CHECK_AFTER_SECONDS = 1.0
_session_used = threading.local()


def _session_check() -> None:
    now = time.monotonic()
    idle = now - getattr(_session_used, "at", now)
    _session_used.at = now
    suspect = connection.errors_occurred or idle > SESSION_CHECK_AFTER_SECONDS
    if connection.connection is not None and suspect and not connection.is_usable():
        connection.close()


def _failure_log(what: str, error: Exception) -> None:
    if dependency_outage(error):  # one line, not a traceback per request of an outage
        logger.warning("%s: dependency unavailable: %s: %s", what, type(error).__name__, error)
    else:
        logger.error(what, exc_info=error)


def _failure_answer(error: Exception) -> Answer:
    """What the DRF path answers for an unexpected error: 503 ``service_unavailable`` with
    ``Retry-After`` when PostgreSQL or Redis is unreachable (``exchange.outages``), else 500."""
    if dependency_outage(error):
        body = JsonResponse(unavailable_body(), status=503).content
        return 503, [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())], body
    return _server_error()


def _server_error() -> Answer:
    body = {"error": {"code": "server_error", "message": "Internal server error.", "details": {}}}
    return 500, [], orjson.dumps(body)


def _security_headers(secure: bool) -> list[tuple[bytes, bytes]]:
    """What Django's SecurityMiddleware and XFrameOptionsMiddleware add to an API response."""
    headers = [(b"content-type", b"application/json")]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append((b"referrer-policy", settings.SECURE_REFERRER_POLICY.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(
            (b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode())
        )
    headers.append((b"x-frame-options", settings.X_FRAME_OPTIONS.encode()))
    if secure and settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append((b"strict-transport-security", value.encode()))
    return headers


class OrderFastPath:
    """ASGI middleware: bots' order requests to the intake thread, the rest to ``app``."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self._worker: IntakeWorker | None = None
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admitted = self._admitted(scope) if settings.ORDER_FAST_PATH else None
        if admitted is None:
            await self.app(scope, receive, send)
            return
        view, authorization, length, secure = admitted
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its order: nothing was accepted
            body += message.get("body", b"")
            if len(body) > length:
                break
            if not message.get("more_body", False):
                break
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        if len(body) != length:
            message = "The body does not match its Content-Length."
            status, headers, payload = _error_answer(exceptions.ParseError(message))
            _settle(future, (status, _security_headers(secure) + headers, payload))
        else:
            meta = _client_meta(scope)
            self.worker().submit(_Call(view, authorization, body, secure, loop, future, meta))
        # shielded: a client that goes away does not cancel an order already being placed
        try:
            status, headers, payload = await asyncio.wait_for(
                asyncio.shield(future), timeout=settings.ORDER_WAIT_SECONDS + ANSWER_GRACE
            )
        except TimeoutError:  # the intake threads are stuck (the database hangs)
            logger.error("an order request got no answer in time")
            body = error_body(
                "unavailable",
                "No answer in time: the order may or may not be placed; "
                "look it up by its client_order_id.",
            )
            status, headers, payload = 503, _security_headers(secure), orjson.dumps(body)
        headers = [*headers, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def worker(self) -> IntakeWorker:
        if self._worker is None:
            with self._lock:
                if self._worker is None:
                    self._worker = IntakeWorker()
        return self._worker

    @staticmethod
    def _admitted(scope: Scope) -> tuple[type, bytes, int, bool] | None:
        """(view, Authorization, Content-Length, secure) when this request is one to take."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        view = PATHS.get(scope["path"])
        if view is None or scope.get("root_path"):
            return None
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in headers:  # a repeated header: let Django decide what it means
                return None
            headers[name] = value
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() != b"bearer ":
            return None
        if b"cookie" in headers:  # a browser: sessions and CSRF are Django's
            return None
        media_type, _, parameters = headers.get(b"content-type", b"").partition(b";")
        if media_type.strip().lower() != b"application/json":
            return None
        charset = parameters.strip().lower().removeprefix(b"charset=").strip(b'"')
        if parameters.strip() and charset not in (b"utf-8", b"utf8"):
            return None  # another charset, or other parameters: DRF's to decode
        try:
            length = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            return None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length < 0 or (limit is not None and length > limit):
            return None
        # as Django's request.is_secure(): the proxy's header, when configured and sent, decides
        secure = scope.get("scheme") == "https"
        proxy = settings.SECURE_PROXY_SSL_HEADER
        if proxy is not None:
            header = proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
            if header in headers:
                sent = headers[header].split(b",")[0].strip().decode("latin-1")
                secure = sent == proxy[1]
        if settings.SECURE_SSL_REDIRECT and not secure:
            return None  # Django redirects it
        host = headers.get(b"host", b"").decode("latin-1")
        domain, _ = split_domain_port(host)
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        if not domain or not validate_host(domain, allowed):
            return None  # Django answers 400
        return view, authorization, length, secure
