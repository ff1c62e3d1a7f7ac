"""Bots' order requests taken in front of Django (``orders.fastpath``) answer exactly as the DRF
views do, and everything that is not such a request still goes through Django."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from rest_framework.throttling import UserRateThrottle

from accounts.services import api_key_create, api_key_revoke
from exchange.handler import SyncChainASGIHandler
from exchange.runner.loop import RunnerLoop
from orders.api import OrderListApi
from orders.fastpath import IntakeWorker, OrderFastPath
from orders.models import Order
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)

VOLATILE = {"id", "created_at", "updated_at", "trade_id", "order_id"}


@pytest.fixture
def app(postgres, settings) -> Iterator[OrderFastPath]:
    settings.SECURE_SSL_REDIRECT = False
    fast = OrderFastPath(SyncChainASGIHandler())
    yield fast
    fast.stop()


def call(
    app: OrderFastPath,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request through the ASGI app, as uvicorn would send it."""
    payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    sent_headers = {
        "host": "localhost",
        "content-type": "application/json",
        "content-length": str(len(payload)),
        "x-forwarded-proto": "https",
        **({"authorization": f"Bearer {key}"} if key else {}),
        **(headers or {}),
    }
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in sent_headers.items() if v is not None],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    messages = [{"type": "http.request", "body": payload, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async_to_sync(app)(scope, receive, send)
    start = sent[0]
    body_bytes = b"".join(m.get("body", b"") for m in sent[1:])
    response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, json.loads(body_bytes) if body_bytes else None


def both(app: OrderFastPath, path: str, body: Any, key: str, **kwargs: Any):
    """The same request through the fast path and through Django (a cookie sends it there)."""
    fast = call(app, path, body, key=key, **kwargs)
    django = call(app, path, body, key=key, headers={"cookie": "x=1"}, **kwargs)
    return fast, django


def same(fast: Any, django: Any) -> None:
    """Equal, but for ids and timestamps."""
    if isinstance(fast, dict):
        assert fast.keys() == django.keys()
        for name in fast:
            if name not in VOLATILE:
                same(fast[name], django[name])
    elif isinstance(fast, list):
        assert len(fast) == len(django)
        for a, b in zip(fast, django, strict=True):
            same(a, b)
    else:
        assert fast == django


@pytest.fixture
def bot(make_user, fund, market):
    user = make_user(role="both")
    fund(user, cny=1_000, tokens=10_000_000, market=market)
    return user, api_key_create(user=user, name="bot", scopes=["read", "trade"]).secret


def order(**extra: Any) -> dict[str, Any]:
    return {"market": SYMBOL, "side": "buy", "price": "8.00", "quantity": "1", **extra}


def test_orders_answer_as_through_django(app, bot, make_user, fund, market) -> None:
    user, key = bot
    (status, headers, body), (d_status, d_headers, d_body) = both(
        app, "/api/v1/orders", order(), key
    )
    assert (status, d_status) == (201, 201)
    assert body["status"] == "open"
    same(body, d_body)
    assert Order.objects.filter(user=user).count() == 2  # one each: nothing doubled or lost
    # the response headers Django's security middleware adds are there too
    for name in (
        "x-content-type-options",
        "referrer-policy",
        "x-frame-options",
        "cross-origin-opener-policy",
        "strict-transport-security",
        "content-type",
    ):
        assert headers[name] == d_headers[name], name

    seller = make_user(role="both")
    fund(seller, tokens=10_000_000, market=market)
    seller_key = api_key_create(user=seller, name="s", scopes=["trade"]).secret
    status, _, sold = call(app, "/api/v1/orders", order(side="sell", quantity="2"), key=seller_key)
    assert (status, sold["status"], sold["filled_quantity"]) == (201, "filled", "2")
    assert [f["liquidity"] for f in sold["fills"]] == ["taker", "taker"]
    assert {f["order_id"] for f in sold["fills"]} == {sold["id"]}


def test_replays_and_refusals_answer_as_through_django(app, bot, make_user) -> None:
    _, key = bot
    status, _, first = call(app, "/api/v1/orders", order(client_order_id="a1"), key=key)
    assert status == 201
    for replay in both(app, "/api/v1/orders", order(client_order_id="a1"), key):
        assert replay[0] == 200
        assert replay[2]["id"] == first["id"]
    cases = [
        order(client_order_id="a1", price="8.01"),  # same id, other body: 409
        order(price=8.0),  # a float
        order(market="NOPE"),
        order(quantity="100000"),  # more than the funds
        order(price="8.001"),  # off the tick
        {"side": "buy"},
        order(price=8),  # a number for a decimal string
        order(timeInForce="IOC"),  # a misspelt field is refused, never ignored
        order(time_in_force="IOC", clientOrderId="abc"),
    ]
    for body in cases:
        (status, _, answer), (d_status, _, d_answer) = both(app, "/api/v1/orders", body, key)
        assert status >= 400
        assert (status, answer) == (d_status, d_answer), body
    broke = api_key_create(user=make_user(), name="b", scopes=["trade"]).secret
    (status, _, answer), (d_status, _, d_answer) = both(app, "/api/v1/orders", order(), broke)
    assert (status, answer["error"]["code"]) == (422, "insufficient_funds")
    assert (status, answer) == (d_status, d_answer)


def test_authentication_scope_and_malformed_bodies(app, bot) -> None:
    user, key = bot
    reader = api_key_create(user=user, name="r", scopes=["read"])
    revoked = api_key_create(user=user, name="x", scopes=["trade"])
    api_key_revoke(user=user, key_id=revoked.api_key.id)
    for bad_key, status in (("tx_nope_nope", 401), (reader.secret, 403), (revoked.secret, 401)):
        (f_status, f_headers, f_body), (d_status, d_headers, d_body) = both(
            app, "/api/v1/orders", order(), bad_key
        )
        assert (f_status, f_body) == (d_status, d_body) == (status, d_body)
        assert f_headers.get("www-authenticate") == d_headers.get("www-authenticate")
    (status, _, body), (d_status, _, d_body) = both(
        app, "/api/v1/orders", None, key, raw=b'{"market": '
    )
    assert (status, body["error"]["code"]) == (d_status, d_body["error"]["code"])
    assert status == 400
    assert body["error"]["code"] == "malformed_request"
    status, _, body = call(
        app, "/api/v1/orders", None, key=key, raw=b"{}", headers={"content-length": "9"}
    )
    assert (status, body["error"]["code"]) == (400, "malformed_request")
    assert not Order.objects.exists()


def test_batches_answer_as_through_django(app, bot) -> None:
    _, key = bot
    body = {"orders": [order(), order(price=8.0), order(market="NOPE"), order(side="sell")]}
    (status, _, fast), (d_status, _, django) = both(app, "/api/v1/orders/batch", body, key)
    assert (status, d_status) == (200, 200)
    assert [r["status"] for r in fast["results"]] == [201, 400, 404, 201]
    same(fast, django)
    for envelope in (
        {"orders": []},
        {"orders": [order()] * 51},
        [order()],
        {"orders": [order()], "atomic": True},
    ):
        fast_answer, django_answer = both(app, "/api/v1/orders/batch", envelope, key)
        assert fast_answer[0] == django_answer[0] == 400
        assert fast_answer[2] == django_answer[2]


def test_both_paths_count_against_the_same_throttle(app, bot, monkeypatch, settings) -> None:
    _, key = bot
    monkeypatch.setattr(OrderListApi, "throttle_classes", [UserRateThrottle])
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "3/minute", "anon": "3/minute"},
    }
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/minute"})
    from django.core.cache import cache

    cache.clear()
    assert call(app, "/api/v1/orders", order(), key=key)[0] == 201
    assert call(app, "/api/v1/orders", order(), key=key, headers={"cookie": "x=1"})[0] == 201
    assert call(app, "/api/v1/orders", order(), key=key)[0] == 201
    status, headers, body = call(app, "/api/v1/orders", order(), key=key)
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert int(headers["retry-after"]) > 0
    status, _, _ = call(app, "/api/v1/orders", order(), key=key, headers={"cookie": "x=1"})
    assert status == 429
    assert Order.objects.count() == 3


def test_requests_it_does_not_take_go_to_django(app, bot, settings) -> None:
    _, key = bot
    admitted = OrderFastPath._admitted

    def scope(**changes: Any) -> dict[str, Any]:
        headers = {
            b"host": b"localhost",
            b"authorization": f"Bearer {key}".encode(),
            b"content-type": b"application/json; charset=utf-8",
            b"content-length": b"2",
            b"x-forwarded-proto": b"https",
        }
        headers.update(changes.pop("headers", {}))
        base = {"type": "http", "method": "POST", "path": "/api/v1/orders", "scheme": "http"}
        return {
            **base,
            **changes,
            "headers": [(k, v) for k, v in headers.items() if v is not None],
        }

    assert admitted(scope()) is not None
    assert admitted(scope(path="/api/v1/orders/batch")) is not None
    refused = [
        scope(method="GET"),
        scope(path="/api/v1/orders/1"),
        scope(type="websocket"),
        scope(headers={b"authorization": None}),
        scope(headers={b"authorization": b"Basic abc"}),
        scope(headers={b"cookie": b"sessionid=1"}),
        scope(headers={b"content-type": b"application/x-www-form-urlencoded"}),
        scope(headers={b"content-type": b"application/json; charset=latin-1"}),
        scope(headers={b"content-length": None}),
        scope(headers={b"content-length": b"999999999"}),
        scope(headers={b"host": b"evil.example"}),
    ]
    for refused_scope in refused:
        assert admitted(refused_scope) is None, refused_scope
    settings.SECURE_SSL_REDIRECT = True
    assert admitted(scope(headers={b"x-forwarded-proto": None})) is None
    assert admitted(scope()) is not None
    # as Django's is_secure(): the proxy's header decides when it is sent
    assert admitted(scope(scheme="https", headers={b"x-forwarded-proto": b"http"})) is None
    assert admitted(scope(scheme="https", headers={b"x-forwarded-proto": None})) is not None
    settings.ORDER_FAST_PATH = False
    status, _, _ = call(app, "/api/v1/orders", order(), key=key)
    assert status == 201  # through Django
    assert app._worker is None


def test_pending_orders_are_answered_when_the_runner_processes_them(
    app, bot, settings, make_user, fund, market
) -> None:
    settings.ENGINE_RUNNER = "external"
    settings.ORDER_WAIT_SECONDS = 10.0
    _, key = bot
    loop = RunnerLoop([SYMBOL], idle_sleep=0.01)
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        answers: list[Any] = []

        def place(price: str) -> None:
            answers.append(call(app, "/api/v1/orders", order(price=price), key=key))

        threads = [threading.Thread(target=place, args=(f"8.{n:02d}",)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        loop.stop.set()
        runner.join(timeout=10)
    assert len(answers) == 8
    assert {(status, body["status"]) for status, _, body in answers} == {(201, "open")}


def test_an_order_the_runner_has_not_reached_comes_back_pending(app, bot, settings) -> None:
    settings.ENGINE_RUNNER = "external"
    settings.ORDER_WAIT_SECONDS = 0.3
    _, key = bot
    started = time.monotonic()
    status, _, body = call(app, "/api/v1/orders", order(), key=key)
    assert (status, body["status"]) == (201, "pending")
    assert 0.3 <= time.monotonic() - started < 5
    assert Order.objects.get(id=body["id"]).status == "pending"  # still accepted


def test_the_worker_stops_when_idle() -> None:
    worker = IntakeWorker()
    worker.stop()
    assert not any(thread.is_alive() for thread in worker._threads)


def test_an_unknown_field_is_refused_by_name_on_both_paths(app, bot) -> None:
    """``timeInForce`` for ``time_in_force``: the bot asked for IOC, it must not get a resting
    GTC order (issue 15, finding 3)."""
    user, key = bot
    body = order(timeInForce="IOC", clientOrderId="abc")
    (status, _, fast), (d_status, _, django) = both(app, "/api/v1/orders", body, key)
    assert (status, d_status) == (400, 400)
    assert fast == django
    assert fast["error"]["code"] == "invalid"
    assert fast["error"]["details"] == {
        "timeInForce": ["Unknown field."],
        "clientOrderId": ["Unknown field."],
    }
    assert "timeInForce" in fast["error"]["message"]
    batch = {"orders": [order(), order(timeInForce="IOC")]}
    (status, _, fast), (d_status, _, django) = both(app, "/api/v1/orders/batch", batch, key)
    assert (status, d_status) == (200, 200)
    assert [r["status"] for r in fast["results"]] == [201, 400]
    assert fast["results"][1] == django["results"][1]
    assert fast["results"][1]["error"]["details"] == {"timeInForce": ["Unknown field."]}
    assert fast["results"][1]["error"]["message"] == "timeInForce: Unknown field."
    assert Order.objects.filter(user=user).count() == 2  # the good one of each batch
    status, _, answer = call(
        app, "/api/v1/orders/batch", {"orders": [order()], "atomic": True}, key=key
    )
    assert (status, answer["error"]["details"]) == (400, {"atomic": ["Unknown field."]})
    assert Order.objects.filter(user=user).count() == 2


def test_a_chunked_body_is_read_not_taken_for_empty(app, bot) -> None:
    """Without Content-Length (``Transfer-Encoding: chunked``) the fast path leaves the request
    to Django, which reads the body it was sent."""
    user, key = bot
    status, _, answer = call(
        app,
        "/api/v1/orders",
        order(client_order_id="chunked"),
        key=key,
        headers={"content-length": None, "transfer-encoding": "chunked"},
    )
    assert status == 201, answer
    assert answer["client_order_id"] == "chunked"
    assert Order.objects.filter(user=user).count() == 1


def test_both_paths_give_the_rate_limit_headers(app, bot, monkeypatch) -> None:
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    from exchange.api_throttles import KeyRateThrottle

    _, key = bot
    monkeypatch.setattr(OrderListApi, "throttle_classes", [KeyRateThrottle])
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "3/minute"})
    cache.clear()
    seen = []
    for cookie in (None, "x=1", None):  # fast, Django, fast: one budget, the key's
        _, headers, _ = call(
            app, "/api/v1/orders", order(), key=key, headers={"cookie": cookie} if cookie else None
        )
        seen.append((headers["ratelimit-limit"], headers["ratelimit-remaining"]))
        assert 0 < int(headers["ratelimit-reset"]) <= 60
    assert seen == [("3", "2"), ("3", "1"), ("3", "0")]
    status, headers, _ = call(app, "/api/v1/orders", order(), key=key)
    assert (status, headers["ratelimit-remaining"]) == (429, "0")
    assert int(headers["retry-after"]) > 0


def test_refusals_before_the_throttles_carry_the_headers_on_both_paths(
    app, bot, monkeypatch, settings
) -> None:
    """401 and 403 come before the throttles run: both paths still say where the caller
    stands (the key's budget; the address's without a valid key), counting nothing."""
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    from exchange.api_throttles import AnonRateThrottle, KeyRateThrottle

    user, _ = bot
    classes = [AnonRateThrottle, KeyRateThrottle]
    monkeypatch.setattr(OrderListApi, "throttle_classes", classes)
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "4/minute", "user": "3/minute"}
    )
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_CLASSES": [f"{c.__module__}.{c.__name__}" for c in classes],
    }
    cache.clear()
    reader = api_key_create(user=user, name="r", scopes=["read"]).secret
    for key, status, expected in (("tx_nope_nope", 401, ("4", "4")), (reader, 403, ("3", "3"))):
        for cookie in (None, "x=1"):  # the fast path, then Django
            got, headers, _ = call(
                app,
                "/api/v1/orders",
                order(),
                key=key,
                headers={"cookie": cookie} if cookie else None,
            )
            assert got == status
            assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == expected
