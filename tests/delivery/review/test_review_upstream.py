"""Review proofs (helper 11): what a provider's upstream says is trusted too far — its usage
is billed unchecked, and its error text (which may echo our Authorization header) reaches the
buyer."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts.services import profile_update
from exchange.delivery.endpoints.crypto import secret_encrypt
from exchange.delivery.endpoints.models import Endpoint
from exchange.delivery.escrow.models import Reservation
from exchange.delivery.gateway.models import Generation
from orders.capacity import capacity_list
from tests.delivery.endpoints.upstream_server import UPSTREAM_KEY, Behaviour, _Handler, _Server
from tests.delivery.gateway.conftest import MODEL, buy, consume_key, exchange_server

pytestmark = pytest.mark.django_db(transaction=True)


class _Scripted(_Handler):
    """Streams three tokens and claims ``claimed`` completion tokens; or, in ``echo`` mode,
    refuses the request with a 400 whose message repeats the Authorization header (as some
    proxies and frameworks do)."""

    mode = "inflate"
    claimed = 500

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if self.mode == "echo":
            auth = self.headers.get("Authorization", "")
            self._json(400, {"error": {"message": f"invalid request (headers: {auth})"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for _ in range(3):
            chunk = {"id": "x", "choices": [{"index": 0, "delta": {"content": "ok "}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        reason = "stop" if self.mode != "long_finish" else "stop_" + "x" * 40
        last = {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
        usage = {"prompt_tokens": 9, "completion_tokens": self.claimed, "total_tokens": 509}
        self.wfile.write(
            f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': usage})}\n\n".encode()
        )
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def scripted():
    import threading

    server = _Server(("127.0.0.1", 0), _Scripted)
    server.behaviour = Behaviour()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _provider(make_trader, pair, base_url: str):
    trader = make_trader(role="provider")
    profile_update(user=trader.user, display_name="scripted")
    for market in pair.markets:
        Endpoint.objects.create(
            provider=trader.user, market=market, base_url=base_url,
            api_key_ciphertext=secret_encrypt(UPSTREAM_KEY), model_id="m", concurrency_limit=8,
        )  # fmt: skip
    until = timezone.now() + timedelta(days=1)
    for market, price in ((pair.output_market, "8.00"), (pair.input_market, "2.00")):
        capacity_list(
            user=trader.user, market=market, quantity="0.01", available_until=until,
            ask_price=price,
        )  # fmt: skip


def _ask(server, key: str, stream: bool) -> httpx.Response:
    return httpx.post(
        f"{server.base}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi."}],
            "max_tokens": 500,
            "stream": stream,
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_a_provider_cannot_bill_far_more_tokens_than_it_streamed(make_trader, pair, scripted):
    _Scripted.mode = "inflate"
    _Scripted.claimed = 500
    with exchange_server() as server:
        _provider(make_trader, pair, scripted)
        buyer = make_trader(cny=10)
        buy(buyer)
        key = consume_key(buyer.user)

        # when: the provider streams 3 tokens and reports 500
        response = _ask(server, key, stream=True)
        assert response.status_code == 200, response.text

        # then: the buyer is not charged 500 output tokens for 3
        used = Reservation.objects.get().used_output_tokens
        assert used < 50, f"{used} output tokens drawn for a 3-token answer"
        usage = next(
            json.loads(line[6:])["usage"]
            for line in response.text.splitlines()
            if line.startswith("data: {") and '"usage"' in line
        )
        assert (usage["completion_tokens"], usage["usage_source"]) == (used, "provider_disputed")
        generation = Generation.objects.get()
        assert (generation.completion_tokens, generation.usage_source) == (
            used,
            "provider_disputed",
        )


def test_the_upstream_key_never_reaches_the_buyer(make_trader, pair, scripted):
    _Scripted.mode = "echo"
    with exchange_server() as server:
        _provider(make_trader, pair, scripted)
        buyer = make_trader(cny=10)
        buy(buyer)
        key = consume_key(buyer.user)

        # when: the upstream refuses the request, repeating our Authorization header
        response = _ask(server, key, stream=False)

        # then: the provider's upstream key is not in the buyer's answer
        assert response.status_code == 400, response.text
        assert UPSTREAM_KEY not in response.text, response.json()["error"]["message"]
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["details"] == {"upstream_status": 400, "upstream_code": None}


def test_a_long_finish_reason_leaves_the_record_matching_the_charge(make_trader, pair, scripted):
    _Scripted.mode = "long_finish"
    _Scripted.claimed = 3
    with exchange_server() as server:
        _provider(make_trader, pair, scripted)
        buyer = make_trader(cny=10)
        buy(buyer)
        key = consume_key(buyer.user)

        # when: the provider streams 3 tokens and ends with a 45-character finish_reason
        try:
            text = _ask(server, key, stream=True).text
        except httpx.HTTPError as error:  # the gateway cut the stream
            text = repr(error)

        # then: the buyer gets its answer, and its generation shows what it was charged
        reservation = Reservation.objects.get()
        generation = Generation.objects.get()
        assert ('"usage"' in text, generation.completion_tokens) == (
            True,
            reservation.used_output_tokens,
        ), (generation.status, generation.completion_tokens, reservation.status,
            reservation.used_output_tokens, text[:120])  # fmt: skip
