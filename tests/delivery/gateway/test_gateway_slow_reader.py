"""A buyer reading its stream slowly does not make the provider miss its service level: the
time the gateway waits for the buyer is not counted as the provider's."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest

from exchange.markets.models import Market
from tests.asgi_server import ROOT, wait_until_serving
from tests.delivery.gateway.conftest import IN, MODEL, OUT, Server, buy, consume_key

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def small_buffer_server() -> Iterator[Server]:
    """The live exchange on a listening socket with a small send buffer (its connections
    inherit it): a buyer that reads slowly soon makes the gateway wait (without it the
    kernel's buffers on loopback take megabytes)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    listener.bind(("127.0.0.1", 0))
    server = Server()
    server.port = listener.getsockname()[1]
    server.base = f"http://127.0.0.1:{server.port}"
    server.process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "exchange.asgi:application", "--fd",
         str(listener.fileno()), "--log-level", "warning"],
        cwd=ROOT, env=server.env, pass_fds=(listener.fileno(),),
    )  # fmt: skip
    try:
        wait_until_serving(server.process, server.base)
        yield server
    finally:
        server.stop()
        listener.close()


def test_a_slow_reader_does_not_earn_a_throughput_credit(make_provider, make_trader):
    # given: a market asking 1000 tokens/s and a provider streaming 3000 tokens at 4000/s
    Market.objects.filter(symbol__in=[IN, OUT]).update(
        min_throughput_tps=1000, max_first_token_latency_ms=5000
    )
    with small_buffer_server() as server:
        make_provider(server.base, "fast", "ttft=10,tps=4000,len=3000")
        buyer = make_trader(cny=10)
        buy(buyer)
        key = consume_key(buyer.user)
        body = orjson.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Go."}],
                "max_tokens": 3000,
                "stream": True,
            }
        )
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body

        # when: the buyer takes the stream at about 50 KB/s (some 300 tokens/s) through a
        # small receive window, so the gateway waits on it
        received = bytearray()
        started = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as buyer_socket:
            buyer_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            buyer_socket.connect(("127.0.0.1", server.port))
            buyer_socket.sendall(request)
            while data := buyer_socket.recv(1024):
                received += data
                time.sleep(0.02)
        took = time.monotonic() - started

        # then: the reading was slower than the market's level, the provider was not
        text = received.decode()
        events = [line[6:] for line in text.split("\n") if line.startswith("data: {")]
        usage = orjson.loads(events[-1])["usage"]
        assert usage["completion_tokens"] == 3000
        assert 2999 / took < 1000, f"the buyer read at {2999 / took:.0f} tokens/s"
        assert usage["sla"] == {"met": True, "reason": ""}, usage["output_tokens_per_second"]
