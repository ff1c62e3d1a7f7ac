"""The OpenAI-compatible gateway: ``/v1/chat/completions`` and ``/v1/models``, in front of
Django in the ASGI app (``exchange.asgi``).

Async end to end: a request is a coroutine on the event loop, not a thread, however long its
stream. The upstream calls share ONE pooled ``aiohttp.ClientSession`` per process
(explicit timeouts; ``egress.upstream_session``: the SSRF guard). Database work runs in a
small thread pool, in few hops (``hops``, ``batches``): one before forwarding (authenticate,
limits, route, write the generation, reserve), one at the end (settle, complete the
generation) — each taken by a whole batch of requests at once, one thread hop and one escrow
group per batch — and one between attempts when a provider fails.

A request's life:

1. Parse and check the body (400), authenticate (401/403), then hop 1: unknown model (404),
   key limits (429/402/403), no lots (402), no healthy provider (503), not enough lots from any
   one provider (402) — all before anything is reserved or forwarded.
2. Forward to the first provider with ``stream_options.include_usage``. Chunks pass through as
   they arrive, with ``id`` (the generation id) and ``model`` (the public model id) rewritten.
   Nothing is sent to the buyer before the first generated token, so a provider that fails
   before it (connection, timeout, HTTP error, an empty or broken stream) is skipped: its
   reservation released, the next provider tried; a failed attempt costs nothing.
3. The provider's final usage chunk is held back; once the stream ends the reservation is
   settled with the provider's usage (capped at our count's bound, else ``provider_disputed``;
   or our count, marked ``usage_source: estimated``) and the SLA verdict (time to first token,
   output tokens/s), and ``usage`` carries the tokens drawn from each market, their cost and
   any credit (money as strings). Where, as OpenAI does it: with
   ``stream_options.include_usage`` a last chunk with empty ``choices``; without, ``usage`` on
   the chunk with the ``finish_reason`` (held back until the settle, so it is still the last
   before ``[DONE]``; the official client reads ``chunk.usage`` either way, our own fields in
   its ``model_extra``).
4. A provider breaking the stream after its first token: what was delivered is settled as an
   SLA miss (credited), and the buyer gets the usage (its chunk, or inside the error) and an
   error event. The request's time limit reached mid-stream ends it the same way, charged but
   not credited. A buyer going away mid-stream: the upstream call is dropped and what was
   delivered is charged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from typing import Any

import aiohttp
import orjson
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from exchange.delivery.endpoints.egress import upstream_session
from exchange.delivery.gateway import auth, batches, selectors, services
from exchange.delivery.gateway.demo_upstream import DemoUpstream
from exchange.delivery.gateway.hops import Batcher
from exchange.delivery.gateway.hops import database_thread as _database_thread
from exchange.delivery.gateway.metering import StreamMeter, units_to_decimal
from exchange.delivery.gateway.protocol import (
    ChatRequest,
    GatewayError,
    SseEvents,
    chat_request_parse,
    upstream_body,
)
from exchange.metrics import gateway_first_token

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DEMO_PREFIX = "/demo-upstream"
# Upstream statuses that judge the buyer's request, not the provider: passed on as 400.
REQUEST_REFUSED = frozenset((400, 413, 422))
_JSON = (b"content-type", b"application/json")
# After its time limit a stopped stream has this long to settle and tell the buyer.
TIME_LIMIT_GRACE_SECONDS = 30
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class UpstreamFailed(Exception):
    """The provider failed before its first token: try the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamRefused(Exception):
    """The provider refused the request itself (400/413/422): the buyer's to fix. Only the
    upstream's error ``code`` and ``param`` are kept (checked identifiers): its message text is
    never passed on, as it may echo our request, headers and the provider's key included."""

    def __init__(self, status: int, code: str | None, param: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.code = code
        self.param = param


# Every request's two database hops, in batches (``hops``, ``batches``).
_begin_hops: Batcher[batches.BeginItem, tuple[services.Plan, services.Attempt]] = Batcher(
    batches.requests_begin
)
_finish_hops: Batcher[batches.FinishItem, services.Finished] = Batcher(batches.requests_finish)


def _money(units: int, decimals: int) -> str:
    return format(units_to_decimal(units, decimals), "f")


async def _body_read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client left before sending its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, "request_too_large", f"The body exceeds {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(
    send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = orjson.dumps(data)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                _JSON,
                _NOSNIFF,
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The
# database thread of a batch needs the GIL back after each of its ~20 round trips, while the
# event loop, busy streaming, holds it: at 5 ms a hand-over, the batch waited longer for the
# GIL than for PostgreSQL. Measured on the 200-stream benchmark: 142 -> 231 requests/s, added
# time to first token p50 633 -> 393 ms (docs/performance.md); 0.1 ms was no better.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005


class GatewayApp:
    """ASGI middleware: ``/v1/…`` to the gateway, ``/demo-upstream/…`` to the demo upstream
    (when ``DEMO_UPSTREAM`` is on), everything else to ``app``."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
        self.demo = DemoUpstream(prefix=DEMO_PREFIX) if settings.DEMO_UPSTREAM else None
        self._client: aiohttp.ClientSession | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/")):
            if self._admitted(scope):
                await self._handle(scope, receive, send)
                return
        elif (
            scope["type"] == "http" and self.demo is not None and path.startswith(DEMO_PREFIX + "/")
        ):
            await self.demo(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _admitted(scope: Scope) -> bool:
        """Hosts Django would serve, over HTTPS when Django would redirect; otherwise Django
        answers (400, or the redirect)."""
        headers = dict(scope["headers"])
        secure = scope.get("scheme") == "https"
        proxy = settings.SECURE_PROXY_SSL_HEADER
        if proxy is not None:
            name = proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
            if name in headers:
                secure = headers[name].split(b",")[0].strip().decode("latin-1") == proxy[1]
        if settings.SECURE_SSL_REDIRECT and not secure:
            return False
        domain, _ = split_domain_port(headers.get(b"host", b"").decode("latin-1"))
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        return bool(domain) and validate_host(domain, allowed)

    def client(self) -> aiohttp.ClientSession:
        """The process's pooled upstream client (one per event loop: a session is bound to the
        loop its connections were opened on)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # Public https upstreams only, checked at every connect (SSRF guard).
            self._client = upstream_session(
                limit=settings.GATEWAY_MAX_CONNECTIONS,
                connect_timeout=settings.GATEWAY_CONNECT_TIMEOUT_SECONDS,
                read_timeout=settings.GATEWAY_READ_TIMEOUT_SECONDS,
            )
            self._client_loop = loop
        return self._client

    # --- dispatch ------------------------------------------------------------------------------
    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"].rstrip("/"), scope["method"]
        generation_id = services.generation_id_new()
        id_header = (b"x-generation-id", generation_id.encode())
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if path == "/v1/chat/completions":
                if method != "POST":
                    raise GatewayError(405, "method_not_allowed", "Use POST.")
                await self._chat(scope, receive, tracked, generation_id)
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                if method != "GET":
                    raise GatewayError(405, "method_not_allowed", "Use GET.")
                await self._models(scope, receive, tracked, path.removeprefix("/v1/models")[1:])
            else:
                raise GatewayError(404, "unknown_url", f"Unknown URL {path}.")
        except GatewayError as error:
            if started:  # too late for an error answer: the stream said what happened
                return
            await _answer(send, error.status, error.body(), [id_header, *error.headers()])
        except ConnectionResetError:
            return  # the client left before its request was complete: nothing was done
        except Exception:
            # an answer in the OpenAI shape even for our own failures (the reservation, if
            # any, was given back by _serve or is left to the reaper)
            logger.exception("gateway request %s failed", generation_id)
            if not started:
                error = GatewayError(500, "server_error", "Internal error in the gateway.")
                await _answer(send, 500, error.body(), [id_header])

    @staticmethod
    def _credentials(scope: Scope) -> bytes | None:
        """The Authorization header; None for a browser session; 401 when there is neither."""
        headers = dict(scope["headers"])
        if b"authorization" in headers:
            return headers[b"authorization"]
        if b"cookie" in headers:
            return None
        raise GatewayError(
            401,
            "missing_api_key",
            "Send an API key with scope 'consume' as 'Authorization: Bearer <key>'.",
        )

    async def _models(self, scope: Scope, receive: Receive, send: Send, model_id: str) -> None:
        def listing(authorization: bytes | None) -> list[dict[str, Any]]:
            if authorization is not None:
                user, api_key = auth.key_principal(authorization)
            else:
                user, api_key = auth.session_principal(scope, b""), None
            return selectors.models_available(user=user, api_key=api_key)

        models = await _database_thread(listing)(self._credentials(scope))
        if not model_id:
            await _answer(send, 200, {"object": "list", "data": models})
            return
        found = next((m for m in models if m["id"] == model_id.lower()), None)
        if found is None:
            raise GatewayError(
                404,
                "model_not_found",
                f"The model {model_id!r} does not exist or you hold no allocation of it.",
                param="model",
            )
        await _answer(send, 200, found)

    # --- chat completions ----------------------------------------------------------------------
    async def _chat(self, scope: Scope, receive: Receive, send: Send, generation_id: str) -> None:
        loop = asyncio.get_running_loop()
        body = await _body_read(receive, settings.GATEWAY_MAX_BODY_BYTES)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "invalid_json", "The body is not valid JSON.") from None
        request = chat_request_parse(parsed)
        credentials = self._credentials(scope)

        def principal() -> tuple[Any, Any]:
            if credentials is not None:
                return auth.key_principal(credentials)
            return auth.session_principal(scope, body), None

        plan, attempt = await _begin_hops.run(batches.BeginItem(principal, request, generation_id))
        # The request's time limit. A stream that has begun stops itself at ``deadline`` and is
        # charged what it delivered (``_stream``); before its first token, or for a whole
        # answer, the limit aborts the request and nothing is charged. A stream's backstop
        # comes later, so that a stopped stream can settle and tell the buyer.
        deadline = loop.time() + settings.GATEWAY_MAX_REQUEST_SECONDS
        backstop = deadline + (TIME_LIMIT_GRACE_SECONDS if plan.stream else 0)
        try:
            async with asyncio.timeout_at(backstop):
                await self._serve(plan, attempt, request, receive, send, deadline)
        except TimeoutError:
            logger.error("generation %s outlived GATEWAY_MAX_REQUEST_SECONDS", plan.public_id)
            raise GatewayError(
                504,
                "request_time_limit",
                "The request reached the gateway's time limit before its answer began; "
                "nothing was charged.",
            ) from None

    async def _serve(
        self,
        plan: services.Plan,
        attempt: services.Attempt,
        request: ChatRequest,
        receive: Receive,
        send: Send,
        deadline: float,
    ) -> None:
        # an attempt holds one of its endpoint's concurrency slots (``slots``, across all
        # gateway processes) from its reservation until it is settled or released
        while True:
            try:
                if plan.stream:
                    await self._stream(plan, attempt, request, receive, send, deadline)
                else:
                    await self._complete(plan, attempt, request, send)
                return
            except UpstreamFailed as failure:
                logger.info(
                    "generation %s: provider %s failed before its first token (%s)",
                    plan.public_id,
                    attempt.provider_id,
                    failure.reason,
                )
                # raises the final 503 (or 402) when no provider is left
                attempt = await _database_thread(services.attempt_failed)(
                    plan=plan, attempt=attempt, reason=failure.reason
                )
            except UpstreamRefused as refused:
                await _database_thread(services.request_refused_upstream)(
                    plan=plan, attempt=attempt, code="upstream_refused_request"
                )
                # our own words only (see UpstreamRefused); the upstream's code rides in details
                raise GatewayError(
                    400,
                    "invalid_request",
                    f"The provider refused the request as invalid (HTTP {refused.status}); "
                    "check its parameters (see error.param and details.upstream_code).",
                    param=refused.param,
                    details={"upstream_status": refused.status, "upstream_code": refused.code},
                ) from None
            except BaseException:
                # our own failure mid-request: give the reservation back (nothing charged)
                # unless it was settled; the reaper would too, later
                await asyncio.shield(
                    _database_thread(services.request_aborted)(plan=plan, attempt=attempt)
                )
                raise

    async def _open(
        self, plan: services.Plan, attempt: services.Attempt, request: ChatRequest
    ) -> aiohttp.ClientResponse:
        """The upstream's answer once its head has arrived (status 200), or ``UpstreamFailed``
        / ``UpstreamRefused``."""
        body = upstream_body(
            request,
            upstream_model=attempt.upstream.model_id,
            default_max_tokens=plan.default_max_tokens,
        )
        try:
            response = await self.client().post(
                attempt.upstream.base_url.rstrip("/") + "/chat/completions",
                data=orjson.dumps(body),
                headers={
                    "authorization": f"Bearer {attempt.upstream.api_key}",
                    "content-type": "application/json",
                    "accept": "text/event-stream" if plan.stream else "application/json",
                },
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamFailed("timeout") from None
        except (aiohttp.ClientError, ValueError) as error:  # ValueError: a malformed URL
            raise UpstreamFailed(f"connection ({type(error).__name__})") from None
        if response.status == 200:
            return response
        try:
            text = (await response.content.read(2000))[:2000]
        except (aiohttp.ClientError, TimeoutError):
            text = b""
        finally:
            response.close()
        if response.status in REQUEST_REFUSED:
            raise UpstreamRefused(
                response.status, *_upstream_error_fields(text, attempt.upstream.api_key)
            )
        raise UpstreamFailed(f"http_{response.status}")

    async def _complete(
        self,
        plan: services.Plan,
        attempt: services.Attempt,
        request: ChatRequest,
        send: Send,
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()  # times are the provider's: from just before the forward
        response = await self._open(plan, attempt, request)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise UpstreamFailed(f"read ({type(error).__name__})") from None
        finally:
            response.release()
        at_ms = int((loop.time() - started) * 1000)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamFailed("not_a_chat_completion")
        meter = StreamMeter()
        meter.response(answer, at_ms)
        finished = await _finish_hops.run(
            batches.FinishItem(
                plan=plan,
                attempt=attempt,
                usage=meter.usage(prompt_estimate=plan.prompt_estimate, **_usage_check()),
                first_token_ms=meter.first_token_ms,
                last_token_ms=meter.last_token_ms,
                total_ms=at_ms,
                finish_reason=meter.finish_reason,
                broken=False,
                cancelled=False,
            )
        )
        answer["id"] = plan.public_id
        answer["model"] = plan.pair.model_id
        answer["usage"] = _usage(plan, attempt, finished, answer.get("usage"))
        await _answer(send, 200, answer, [(b"x-generation-id", plan.public_id.encode())])

    async def _stream(
        self,
        plan: services.Plan,
        attempt: services.Attempt,
        request: ChatRequest,
        receive: Receive,
        send: Send,
        deadline: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        # Times are the provider's: from just before the forward, less the time spent waiting
        # for the buyer to take what was sent (a slow reader must not make the provider look
        # slow; while we wait, the provider's chunks queue in the socket buffers).
        started = loop.time()
        blocked = 0.0
        async with asyncio.timeout_at(deadline):  # before the first token: aborted, not charged
            response = await self._open(plan, attempt, request)
        meter = StreamMeter()
        events = SseEvents()
        pending: list[bytes] = []  # chunks before the first token (not sent yet)
        started_response = False
        provider_usage: Any = None
        # Usage as OpenAI sends it: a last chunk with empty ``choices`` only when the buyer asked
        # (stream_options.include_usage); otherwise on the chunk with the finish_reason, held
        # back until the stream is settled (see the module's docstring).
        options = request.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        held: dict[str, Any] | None = None
        done = broken = cancelled = time_limited = False
        created = int(time.time())
        task = asyncio.current_task()
        watching = True
        left = asyncio.Event()

        async def watch() -> None:
            # the buyer closing the connection ends the upstream call (see below)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    left.set()
                    if watching and task is not None:
                        task.cancel()
                    return

        watcher = asyncio.create_task(watch())

        async def deliver(data: bytes) -> None:
            nonlocal started_response, blocked
            before = loop.time()
            if not started_response:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-cache"),
                            (b"x-accel-buffering", b"no"),
                            _NOSNIFF,
                            (b"x-generation-id", plan.public_id.encode()),
                        ],
                    }
                )
                started_response = True
                data = b"".join((*pending, data))
                pending.clear()
                if meter.first_token_ms is not None:
                    gateway_first_token(meter.first_token_ms / 1000)
            await send({"type": "http.response.body", "body": data, "more_body": True})
            blocked += loop.time() - before

        try:
            try:
                async with asyncio.timeout_at(deadline):
                    # Whatever one read brought (one event, or several when the provider or
                    # this process is busy) leaves in ONE send: a write to the buyer's socket
                    # per read, not per event. Each event is still parsed: our own count of
                    # the completion (metering) reads its text.
                    async for raw in response.content.iter_any():
                        at_ms = int((loop.time() - started - blocked) * 1000)
                        out: list[bytes] = []
                        for data in events.feed(raw):
                            if data == b"[DONE]":
                                done = True
                                break
                            try:
                                chunk = orjson.loads(data)
                            except orjson.JSONDecodeError:
                                continue  # not ours to judge; a malformed event has no tokens
                            if not isinstance(chunk, dict):
                                continue
                            if "error" in chunk:
                                if meter.first_token_ms is None:
                                    raise UpstreamFailed("error_event")
                                broken = True
                                break
                            meter.chunk(chunk, at_ms)
                            if chunk.get("usage") is not None:
                                provider_usage = chunk.pop("usage")
                                if not chunk.get("choices"):
                                    continue  # the usage chunk: replaced by ours at the end
                            chunk["id"] = plan.public_id
                            chunk["model"] = plan.pair.model_id
                            created = chunk.get("created", created)
                            # before the first token nothing is sent (a failure there moves
                            # on to the next provider)
                            queue = pending if meter.first_token_ms is None else out
                            if held is not None:  # a chunk after the finish: not the last
                                queue.append(b"data: " + orjson.dumps(held) + b"\n\n")
                                held = None
                            if not include_usage and _finishes(chunk):
                                held = chunk
                                continue
                            queue.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
                        if out:
                            await deliver(b"".join(out))
                        if done or broken:
                            break
                    else:
                        if events.end() == b"[DONE]":
                            done = True
            except (aiohttp.ClientError, aiohttp.ServerTimeoutError) as error:
                # (first: aiohttp's read timeout is a TimeoutError too)
                if meter.first_token_ms is None:
                    raise UpstreamFailed(f"stream ({type(error).__name__})") from None
                broken = True
            except TimeoutError:
                # the request's time limit, after tokens flowed: like a buyer leaving, the
                # upstream call ends and what was delivered is charged (the buyer is told)
                if meter.first_token_ms is None:
                    raise
                time_limited = True
            except asyncio.CancelledError:
                if not left.is_set():
                    raise
                if task is not None:
                    task.uncancel()
                cancelled = True
            finally:
                watching = False
                await _upstream_done(response, complete=done)
            # a stream that ended without [DONE] is complete if it said why it finished
            if not (done or cancelled or broken or time_limited) and meter.finish_reason is None:
                if meter.first_token_ms is None:
                    raise UpstreamFailed("stream_ended_early")
                broken = True
            finished = await _finish_hops.run(
                batches.FinishItem(
                    plan=plan,
                    attempt=attempt,
                    usage=meter.usage(prompt_estimate=plan.prompt_estimate, **_usage_check()),
                    first_token_ms=meter.first_token_ms,
                    last_token_ms=meter.last_token_ms,
                    total_ms=int((loop.time() - started - blocked) * 1000),
                    finish_reason=meter.finish_reason,
                    broken=broken,
                    cancelled=cancelled,
                    time_limited=time_limited,
                )
            )
            if cancelled:
                return
            usage: dict[str, Any] | None = _usage(plan, attempt, finished, provider_usage)
            if held is not None:
                held["usage"] = usage
                await deliver(b"data: " + orjson.dumps(held) + b"\n\n")
                usage = None
            elif include_usage or not (broken or time_limited):
                final = {
                    "id": plan.public_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": plan.pair.model_id,
                    "choices": [],
                    "usage": usage,
                }
                await deliver(b"data: " + orjson.dumps(final) + b"\n\n")
                usage = None
            if broken or time_limited:
                error = (
                    GatewayError(
                        502,
                        "provider_broke_stream",
                        "The provider broke the stream; what it delivered is charged and "
                        "credited back (service level missed).",
                    )
                    if broken
                    else GatewayError(
                        504,
                        "request_time_limit",
                        "The request reached the gateway's time limit; what was delivered is "
                        "charged.",
                    )
                )
                body = error.body()
                if usage is not None:  # no chunk carried it: the error does (the official
                    body["error"]["usage"] = usage  # client raises APIError, body = error)
                await deliver(b"data: " + orjson.dumps(body) + b"\n\n")
            else:
                await deliver(b"data: [DONE]\n\n")
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()


async def _upstream_done(response: aiohttp.ClientResponse, *, complete: bool) -> None:
    """End the upstream call. After ``[DONE]`` the rest of the body (its chunked end, normally
    in the same read or the next) is waited for briefly, so that the connection goes back to
    the pool; any other end closes it (the provider may still be generating)."""
    if complete and not response.content.at_eof():
        try:
            async with asyncio.timeout(0.1):
                await response.content.read()
        except (aiohttp.ClientError, TimeoutError):
            response.close()
            return
    if complete:
        response.release()
    else:
        response.close()


# An upstream error's code or param worth passing on: a short identifier ("context_length_
# exceeded", "messages[0].content"), never free text.
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.\[\]-]{0,63}")


def _finishes(chunk: dict[str, Any]) -> bool:
    """Does this chunk carry a choice's finish_reason (the last chunk of the answer)?"""
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(choice, dict) and choice.get("finish_reason") for choice in choices
    )


def _usage_check() -> dict[str, Any]:
    """How far a provider's usage may exceed our count (settings, read per request: cheap)."""
    return {
        "tolerance": Decimal(settings.GATEWAY_USAGE_TOLERANCE),
        "slack": settings.GATEWAY_USAGE_SLACK_TOKENS,
    }


def _upstream_error_fields(text: bytes, secret: str) -> tuple[str | None, str | None]:
    """(code, param) of an upstream's OpenAI-shaped error body, each only when it is a plain
    identifier that does not contain the provider's key; anything else is dropped."""
    try:
        error = orjson.loads(text)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        return None, None
    if not isinstance(error, dict):
        return None, None

    def field(name: str) -> str | None:
        value = error.get(name)
        if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
            return None
        if secret and (secret in value or (len(value) >= 8 and value in secret)):
            return None
        return value

    return field("code"), field("param")


def _usage(
    plan: services.Plan,
    attempt: services.Attempt,
    finished: services.Finished,
    provider_usage: Any,
) -> dict[str, Any]:
    """The ``usage`` object the buyer gets: OpenAI's counts (as charged) plus what was drawn
    from each market, the cost and credit (strings, quote currency), and the service level."""
    money = partial(_money, decimals=plan.decimals)
    settlement = finished.settlement
    input_cost = settlement.input_cost_units if settlement else 0
    output_cost = settlement.output_cost_units if settlement else 0
    credit = settlement.credit_units if settlement else 0
    usage = dict(provider_usage) if isinstance(provider_usage, dict) else {}
    usage.update(
        prompt_tokens=finished.usage.prompt_tokens,
        completion_tokens=finished.usage.completion_tokens,
        total_tokens=finished.usage.total_tokens,
        usage_source=finished.usage.source,
        currency=plan.pair.output_market.quote_currency,
        cost=money(input_cost + output_cost),
        credit=money(credit),
        markets={
            "input": {
                "market": plan.pair.input_market.symbol,
                "tokens": finished.usage.prompt_tokens,
                "cost": money(input_cost),
            },
            "output": {
                "market": plan.pair.output_market.symbol,
                "tokens": finished.usage.completion_tokens,
                "cost": money(output_cost),
            },
        },
        provider=attempt.provider_name,
        sla={"met": finished.sla.met, "reason": finished.sla.reason},
        output_tokens_per_second=(
            str(finished.output_tokens_per_second)
            if finished.output_tokens_per_second is not None
            else None
        ),
    )
    return usage
