"""Review proofs (helper 11): gateway money that a buyer's own behaviour can move.

Each test states what a regulated exchange must do and fails while the code does otherwise."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from exchange.delivery.escrow.models import Reservation, ReservationStatus
from exchange.delivery.gateway.models import Generation
from tests.delivery.escrow.conftest import assert_audit_ok
from tests.delivery.gateway.conftest import MODEL, buy, consume_key, exchange_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_stream_cut_by_the_request_time_limit_charges_what_was_delivered(
    make_provider, make_trader
):
    # given: a request time limit of 2 s and a provider that streams 60 tokens at 10/s
    with exchange_server(GATEWAY_MAX_REQUEST_SECONDS="2") as server:
        make_provider(server.base, "slow", "ttft=20,tps=10,len=60")
        buyer = make_trader(cny=10)
        buy(buyer)
        key = consume_key(buyer.user)

        # when: the buyer reads the stream until the gateway stops it
        received = 0
        lines: list[str] = []
        try:
            with httpx.stream(
                "POST",
                f"{server.base}/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "Go."}],
                    "max_tokens": 60,
                    "stream": True,
                },
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            ) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    if '"content":"' in line and '"content":""' not in line:
                        received += 1
        except httpx.HTTPError:
            pass  # the gateway dropped the connection

        # then: the tokens the buyer received are drawn from its allocation and paid for
        assert received >= 5, received
        time.sleep(0.5)
        reservation = Reservation.objects.get()
        assert reservation.status == ReservationStatus.SETTLED, (
            f"{received} tokens streamed to the buyer, reservation {reservation.status}: "
            "the whole worst case was given back, nothing charged"
        )
        assert reservation.used_output_tokens >= received
        # and the stream ended like a broken one: the usage chunk, then the reason
        last = [x for x in lines if x.startswith("data: ")][-1]
        usage = orjson.loads(last[6:])["error"]["usage"]  # no usage chunk was asked for
        assert usage["completion_tokens"] == reservation.used_output_tokens
        assert orjson.loads(last[6:])["error"]["code"] == "request_time_limit"
        generation = Generation.objects.get()
        assert (generation.status, generation.error_code) == ("time_limited", "request_time_limit")
        assert_audit_ok()


def test_a_slow_request_body_does_not_earn_the_buyer_an_sla_credit(make_provider, make_trader):
    # given: a fast provider (answers well inside the market's 1500 ms / 40 tok/s level)
    with exchange_server() as server:
        make_provider(server.base, "fast", "ttft=10,tps=1000,len=10")
        buyer = make_trader(cny=10)
        buy(buyer)
        key = consume_key(buyer.user)
        body = orjson.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 10}
        )

        def trickle():
            # the buyer's own upload takes 3 s: the provider is not involved yet
            for index in range(len(body)):
                yield body[index : index + 1]
                if index % 10 == 0:
                    time.sleep(0.15)

        # when: a non-streamed request whose body the buyer uploads slowly
        response = httpx.post(
            f"{server.base}/v1/chat/completions",
            content=trickle(),
            headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
            timeout=30,
        )

        # then: the provider met its level, so nothing is credited at its expense
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        generation = Generation.objects.get()
        assert usage["sla"]["met"] is True, (usage["sla"], usage["credit"])
        assert generation.credit_units == 0
