"""Issue #16, finding 6: each input that answered 500 is now a 4xx that changes nothing — through
Django and through the order fast path, which must refuse exactly as the DRF view does."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from accounts.models import User
from accounts.services import api_key_create
from exchange.asgi import application
from orders.models import Order, OrderCommand
from tests.inputs.asgi_call import asgi_call
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bot(make_user, fund, market):
    user = make_user(role="buyer")
    fund(user, cny=1_000)
    return api_key_create(user=user, name="bot", scopes=["read", "trade"]).secret


def both(app, key: str, body: dict) -> list[tuple[int, dict]]:
    """The same order through the fast path and through Django (a cookie sends it there)."""
    raw = json.dumps(body).encode()
    answers = []
    for headers in ({}, {"cookie": "x=1"}):
        status, _, answer = asgi_call(app, "POST", "/api/v1/orders", raw=raw, key=key,
                                      headers=headers)  # fmt: skip
        answers.append((status, answer))
    return answers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "1e999999"),  # overflowed the division by the tick size
        ("price", "1e-1000100"),  # underflowed to a zero price
        ("quantity", "1e999999"),
        ("quantity", "1e-1000100"),
        ("price", "9" * 100),
        ("quantity", "0." + "0" * 40 + "1"),
    ],
)
def test_out_of_range_decimals_are_refused_before_any_arithmetic(app, bot, field, value):
    body = {"market": SYMBOL, "side": "buy", "price": "8.00", "quantity": "1", field: value}
    fast, django = both(app, bot, body)
    assert fast == django
    status, answer = fast
    assert status == 400, answer
    assert answer["error"]["details"] == {field: "out_of_range"}
    assert (Order.objects.count(), OrderCommand.objects.count()) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        {"market": SYMBOL, "side": "buy", "price": "8.00", "quantity": "1",
         "client_order_id": "a\x00b"},
        {"market": "QWEN\x00", "side": "buy", "price": "8.00", "quantity": "1"},
    ],
)  # fmt: skip
def test_control_characters_in_bodies_are_refused(app, bot, body):
    fast, django = both(app, bot, body)
    assert fast == django
    status, answer = fast
    assert status == 400, answer
    assert answer["error"]["code"] == "malformed_request"
    assert Order.objects.count() == 0


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/v1/orders", b"[" * 200_000 + b"]" * 200_000),  # deeper than Python's stack
        ("/api/v1/orders", b'{"a":' * 5_000 + b"1" + b"}" * 5_000),
        ("/api/v1/orders/batch", b"[" * 200_000 + b"]" * 200_000),
    ],
)
def test_bodies_nested_too_deeply_are_a_400_on_both_paths(app, bot, path, raw):
    answers = []
    for headers in ({}, {"cookie": "x=1"}):  # the fast path, then Django
        status, _, answer = asgi_call(app, "POST", path, raw=raw, key=bot, headers=headers)
        answers.append((status, answer))
    assert answers[0] == answers[1]
    status, answer = answers[0]
    assert status == 400, answer
    assert answer["error"]["code"] == "malformed_request"
    assert "nested too deeply" in answer["error"]["message"]
    assert Order.objects.count() == 0


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/orders", b"market=%00"),
        ("/api/v1/orders", b"client_order_id=a%01b"),
        (f"/api/v1/markets/{SYMBOL}\x00/book", b""),
        ("/api/v1/markets/\x00/ticker", b""),
        ("/api/v1/markets", b"x=%00"),
    ],
)
def test_control_characters_in_the_url_are_refused(app, bot, path, query):
    status, _, answer = asgi_call(app, "GET", path, query=query, key=bot)
    assert status == 400, answer
    assert answer["error"]["code"] == "malformed_request"


def test_control_characters_in_a_page_address_are_refused(app, market):
    status, headers, _ = asgi_call(app, "GET", f"/trade/{SYMBOL}\x00/")
    assert status == 400
    assert headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [("2026-01-01", "9999-12-31", "end"), ("0001-01-01", "2026-01-01", "start")],
)
def test_statement_dates_are_bounded(app, bot, start, end, field):
    query = f"start={start}&end={end}".encode()
    status, _, answer = asgi_call(app, "GET", "/api/v1/ledger/statement.csv", query=query, key=bot)
    assert status == 400, answer
    assert answer["error"]["details"] == {field: "out_of_range"}


def test_signup_refuses_an_email_longer_than_the_column(client):
    email = "a" * 64 + "@" + ("b" * 60 + ".") * 4 + "com"
    assert len(email) > 254
    page = client.post(
        "/accounts/signup/", {"email": email, "password": "a-Strong-pass-123", "role": "buyer"}
    )
    assert page.status_code == 200  # the form again, with its error
    assert b"at most 254 characters" in page.content
    assert not User.objects.filter(email__startswith="a" * 64).exists()


@pytest.mark.parametrize(
    "message",
    [
        {"op": "subscribe", "channels": [{"a": 1}], "markets": [SYMBOL]},
        {"op": "subscribe", "channels": ["book"], "markets": [[SYMBOL]]},
        {"op": "unsubscribe", "channels": [["book"]], "markets": [{}]},
    ],
)
def test_websocket_subscriptions_with_dicts_or_lists_get_an_error_frame(market, message):
    async def scenario() -> None:
        ws = WebsocketCommunicator(
            application, "/ws/v1", headers=[(b"origin", b"http://127.0.0.1:8000")]
        )
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to({**message, "id": 3})
        error = await ws.receive_json_from(timeout=5)
        assert (error["type"], error["code"], error["id"]) == ("error", "invalid_subscription", 3)
        await ws.send_json_to({"op": "ping", "id": 4})  # still open
        assert await ws.receive_json_from(timeout=5) == {"type": "pong", "id": 4}
        await ws.disconnect()

    async_to_sync(scenario)()
