"""Who may connect to /ws/v1 without an Origin, and what a session cookie is worth there.

A browser always sends Origin, so a handshake without one is a bot: it may read public channels
and use an API key, but never the session cookie it carries (cross-site websocket hijacking needs
the cookie; a foreign Origin is refused outright). Checked through Channels' communicator and
against a real server with the ``websockets`` library, as a bot would connect.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from accounts.services import api_key_create
from exchange.asgi import application
from tests.asgi_server import asgi_server
from tests.marketdata.test_e2e import post
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db(transaction=True)
ALLOWED_ORIGIN = b"http://127.0.0.1:8000"
FOREIGN_ORIGIN = b"https://evil.example.com"
PUBLIC = {"op": "subscribe", "channels": ["ticker", "book"], "markets": [SYMBOL], "id": 1}
PRIVATE = {"op": "subscribe", "channels": ["user"], "id": 2}


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def communicator(headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/v1", headers=headers)


async def assert_refused(ws: WebsocketCommunicator) -> None:
    """The handshake is refused; then the consumer is told the socket is gone, as a server would.

    Without the disconnect the refused consumer's task stays parked on the channel layer, and
    closing the test's event loop waits on its cancellation (it once hung a CI run for an hour).
    """
    connected, _ = await ws.connect()
    try:
        assert not connected
    finally:
        await ws.disconnect()


def reply_to(messages: list[dict], request_id: int) -> dict:
    return next(m for m in messages if m.get("id") == request_id)


# --- through Channels' communicator ---------------------------------------------------------------
def test_no_origin_may_subscribe_to_public_channels(market) -> None:
    async def scenario():
        ws = communicator([])
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(PUBLIC)
        first = await ws.receive_json_from(timeout=5)
        assert (first["type"], first["markets"]) == ("subscribed", [SYMBOL])
        snapshot = await ws.receive_json_from(timeout=5)
        assert (snapshot["channel"], snapshot["type"]) == ("book", "snapshot")
        await ws.disconnect()

    async_to_sync(scenario)()


def test_no_origin_with_a_bearer_key_gets_the_user_channel(market, make_user) -> None:
    user = make_user()
    key = api_key_create(user=user, name="bot", scopes=["read"]).secret

    async def scenario():
        ws = communicator([(b"authorization", f"Bearer {key}".encode())])
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to(PRIVATE)
        assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
        await ws.disconnect()

    async_to_sync(scenario)()


def test_a_bad_bearer_key_refuses_the_handshake(market, make_user) -> None:
    user = make_user()
    no_read = api_key_create(user=user, name="bot", scopes=["trade"]).secret

    async def scenario():
        for key in ("tx_nope_nope", no_read):
            await assert_refused(communicator([(b"authorization", f"Bearer {key}".encode())]))

    async_to_sync(scenario)()


def test_session_cookie_without_origin_gets_no_private_channel(market, make_user) -> None:
    cookie = session_cookie(make_user()).encode()

    async def scenario():
        # the same cookie with an allowed Origin is a logged-in session ...
        browser = communicator([(b"origin", ALLOWED_ORIGIN), (b"cookie", cookie)])
        assert (await browser.connect())[0]
        await browser.send_json_to(PRIVATE)
        assert (await browser.receive_json_from(timeout=5))["type"] == "subscribed"
        await browser.disconnect()
        # ... and without one it is ignored
        bot = communicator([(b"cookie", cookie)])
        assert (await bot.connect())[0]
        await bot.send_json_to(PRIVATE)
        refusal = await bot.receive_json_from(timeout=5)
        assert (refusal["type"], refusal["code"]) == ("error", "not_authenticated")
        await bot.disconnect()

    async_to_sync(scenario)()


def test_foreign_origin_is_refused_even_with_a_key_or_a_cookie(market, make_user) -> None:
    user = make_user()
    key = api_key_create(user=user, name="bot", scopes=["read"]).secret
    cookie = session_cookie(user).encode()

    async def scenario():
        for extra in ([], [(b"authorization", f"Bearer {key}".encode())], [(b"cookie", cookie)]):
            await assert_refused(communicator([(b"origin", FOREIGN_ORIGIN), *extra]))

    async_to_sync(scenario)()


# --- against a real server, with the websockets library -------------------------------------------
@pytest.fixture
def server(postgres, redis_url):
    with asgi_server() as running:
        yield running


def receive_until(ws, request_id: int) -> list[dict]:
    messages = []
    while not any(m.get("id") == request_id for m in messages):
        messages.append(json.loads(ws.recv(timeout=5)))
    return messages


def test_bots_without_origin_on_a_real_server(server, market, make_user, fund) -> None:
    base, port = server
    url = f"ws://127.0.0.1:{port}/ws/v1"
    bot, browser_user = make_user(), make_user()
    fund(bot, cny=100)
    key = api_key_create(user=bot, name="bot", scopes=["read", "trade"]).secret
    cookie = session_cookie(browser_user)

    # public channels, no Origin, no credentials: what most bot libraries do
    with ws_connect(url) as ws:
        ws.send(json.dumps(PUBLIC))
        messages = receive_until(ws, 1)
        assert reply_to(messages, 1)["type"] == "subscribed"

    # an API key on the handshake: my orders arrive on the private channel
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        ws.send(json.dumps(PRIVATE))
        assert reply_to(receive_until(ws, 2), 2)["type"] == "subscribed"
        order = post(base, key, {"market": SYMBOL, "side": "buy", "price": "7.00", "quantity": "1"})
        update = None
        while update is None:
            message = json.loads(ws.recv(timeout=10))
            if message.get("channel") == "user":
                update = message["updates"][0]
        assert (update["kind"], update["id"], update["status"]) == ("order", order["id"], "open")

    # an API key by the auth op works the same way
    with ws_connect(url) as ws:
        ws.send(json.dumps({"op": "auth", "key": key, "id": 3}))
        assert reply_to(receive_until(ws, 3), 3)["type"] == "authenticated"
        ws.send(json.dumps(PRIVATE))
        assert reply_to(receive_until(ws, 2), 2)["type"] == "subscribed"

    # a session cookie is a user only with an allowed Origin
    origin = f"http://127.0.0.1:{port}"
    with ws_connect(url, origin=origin, additional_headers={"Cookie": cookie}) as ws:
        ws.send(json.dumps(PRIVATE))
        assert reply_to(receive_until(ws, 2), 2)["type"] == "subscribed"
    with ws_connect(url, additional_headers={"Cookie": cookie}) as ws:
        ws.send(json.dumps(PRIVATE))
        assert reply_to(receive_until(ws, 2), 2)["code"] == "not_authenticated"

    # a foreign Origin is refused, whatever the credentials
    for headers in ({}, {"Authorization": f"Bearer {key}"}, {"Cookie": cookie}):
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(url, origin="https://evil.example.com", additional_headers=headers)
        assert refused.value.response.status_code == 403
    # and so is a bad key
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, additional_headers={"Authorization": "Bearer tx_nope_nope"})
    assert refused.value.response.status_code == 403
