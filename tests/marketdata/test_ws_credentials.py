"""Issue #16, finding 7: a websocket's private ``user`` subscription ends with its credential.

Revoking the key or logging out the session closes the connection with 4401 within seconds,
on a real server: the revocation and the logout push a message to the user's connections, and
the heartbeat re-checks the credential in case the push was lost.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from accounts.models import ApiKey
from accounts.services import api_key_create
from tests.asgi_server import asgi_server

pytestmark = pytest.mark.django_db(transaction=True)

WITHIN_SECONDS = 5


@pytest.fixture
def server(postgres, redis_url):
    with asgi_server() as running:
        yield running


@contextmanager
def subscribed_by_key(port: int, key: str) -> Iterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {key}"}
    with connect(f"ws://127.0.0.1:{port}/ws/v1", additional_headers=headers) as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": ["user"]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"
        yield ws


def close_code_within(ws, seconds: float) -> int | None:
    """The close code the server sends within ``seconds`` (None: still open)."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.05, deadline - time.monotonic()))
    except TimeoutError:
        return None
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    return None


def test_revoking_the_key_closes_its_websocket(server, make_user) -> None:
    base, port = server
    user = make_user()
    manager = api_key_create(user=user, name="manager", scopes=["read", "keys"])
    watched = api_key_create(user=user, name="watcher", scopes=["read"])
    other = api_key_create(user=user, name="other", scopes=["read"])
    with subscribed_by_key(port, watched.secret) as ws, subscribed_by_key(port, other.secret) as ok:
        request = urllib.request.Request(
            f"{base}/api/v1/api-keys/{watched.api_key.id}", method="DELETE",
            headers={"Authorization": f"Bearer {manager.secret}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert close_code_within(ws, WITHIN_SECONDS) == 4401
        # the user's other key keeps its subscription
        ok.send(json.dumps({"op": "ping"}))
        assert json.loads(ok.recv(timeout=5))["type"] == "pong"


def test_logging_out_closes_the_sessions_websocket(server, make_user) -> None:
    base, port = server
    user = make_user()
    browser = Client()
    browser.force_login(user)
    session_id = browser.cookies["sessionid"].value
    origin = f"http://127.0.0.1:{port}"
    with connect(
        f"ws://127.0.0.1:{port}/ws/v1", origin=origin,
        additional_headers={"Cookie": f"sessionid={session_id}"},
    ) as ws:  # fmt: skip
        ws.send(json.dumps({"op": "subscribe", "channels": ["user"]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"
        with httpx.Client(base_url=base, timeout=10) as http:
            page = http.get("/accounts/api-keys/", headers={"Cookie": f"sessionid={session_id}"})
            assert page.status_code == 200
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
            csrf_cookie = page.cookies["csrftoken"]
            logout = http.post(
                "/accounts/logout/", data={"csrfmiddlewaretoken": token},
                headers={"Cookie": f"sessionid={session_id}; csrftoken={csrf_cookie}"},
            )  # fmt: skip
            assert logout.status_code == 302
        assert close_code_within(ws, WITHIN_SECONDS) == 4401


def test_the_heartbeat_catches_a_revocation_whose_push_was_lost(postgres, redis_url, make_user):
    # The key is revoked in the database directly: no push reaches the server, only the
    # heartbeat's re-check can notice.
    user = make_user()
    watched = api_key_create(user=user, name="watcher", scopes=["read"])
    served = asgi_server(WS_HEARTBEAT_SECONDS="0.5", WS_CREDENTIAL_RECHECK_SECONDS="0")
    with served as (_base, port), subscribed_by_key(port, watched.secret) as ws:
        assert close_code_within(ws, 1.5) is None  # heartbeats, still open
        ApiKey.objects.filter(id=watched.api_key.id).update(revoked_at=timezone.now())
        assert close_code_within(ws, WITHIN_SECONDS) == 4401


def test_a_revoked_key_cannot_subscribe_again(server, make_user) -> None:
    _base, port = server
    user = make_user()
    watched = api_key_create(user=user, name="watcher", scopes=["read"])
    with connect(f"ws://127.0.0.1:{port}/ws/v1") as ws:
        ws.send(json.dumps({"op": "auth", "key": watched.secret}))
        assert json.loads(ws.recv(timeout=5))["type"] == "authenticated"
        ApiKey.objects.filter(id=watched.api_key.id).update(revoked_at=timezone.now())
        ws.send(json.dumps({"op": "subscribe", "channels": ["user"]}))
        assert close_code_within(ws, WITHIN_SECONDS) == 4401
