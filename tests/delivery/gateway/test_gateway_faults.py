"""The gateway process SIGKILLed mid-request, at several points: after a restart the reaper
leaves every reservation settled or released, nothing is charged twice, and the ledger audit
holds."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import httpx
import pytest

from exchange.delivery.escrow.models import Lot, Reservation, ReservationStatus
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.delivery.gateway.services import generations_reap
from exchange.ledger import selectors as ledger_selectors
from tests.delivery.escrow.conftest import assert_audit_ok
from tests.delivery.gateway.conftest import (
    IN,
    MODEL,
    OUT,
    buy,
    client,
    consume_key,
    exchange_server,
)

pytestmark = pytest.mark.django_db(transaction=True)

HELD = 10_000
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Stream for a while."}],
    "max_tokens": 60,
    "stream": True,
}


def tokens(user, symbol: str) -> tuple[int, int]:
    found = ledger_selectors.balance_get(user=user, asset=symbol)
    return found.available, found.held


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def stream_until(base: str, key: str, content_chunks: int | None, finished: bool) -> None:
    """Read the stream until ``content_chunks`` chunks with text (or the finish chunk)."""
    seen = 0
    with httpx.stream(
        "POST",
        f"{base}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if finished and '"finish_reason":"' in line:
                return
            if '"content":"' in line and '"content":""' not in line:
                seen += 1
                if content_chunks is not None and seen >= content_chunks:
                    return


@pytest.mark.parametrize(
    "point", ["before_first_token", "after_first_token", "mid_stream", "after_last_token"]
)
def test_killed_mid_stream_nothing_is_charged_twice(point, make_provider, make_trader):
    behaviour = (
        "ttft=1500,tps=20,len=60" if point == "before_first_token" else "ttft=20,tps=25,len=60"
    )
    with exchange_server() as server:
        make_provider(server.base, "alpha", behaviour)
        buyer = make_trader(cny=10)
        buy(buyer)
        key = consume_key(buyer.user)

        # when: the gateway dies (SIGKILL) with the request at ``point``
        if point == "before_first_token":
            failures: list[BaseException] = []

            def request() -> None:
                try:
                    stream_until(server.base, key, 1, finished=False)
                except BaseException as error:  # the connection dies with the server
                    failures.append(error)

            caller = threading.Thread(target=request)
            caller.start()
            wait_for(lambda: Reservation.objects.filter(status=ReservationStatus.OPEN).exists())
            server.kill()
            caller.join(timeout=30)
            assert failures  # the buyer got no answer
        else:
            wanted = {"after_first_token": 1, "mid_stream": 20, "after_last_token": None}[point]
            stream_until(server.base, key, wanted, finished=point == "after_last_token")
            server.kill()

        # then: the request's generation and reservation are left as the kill found them
        generation = Generation.objects.get()
        assert generation.status in (GenerationStatus.IN_PROGRESS, GenerationStatus.COMPLETED)
        held_at_kill = tokens(buyer.user, OUT)[1]

        # when: the gateway restarts and the reaper runs (as beat would, past the age limit)
        server.start()
        closed = generations_reap(older_than=timedelta(0))

        # then: nothing is open, held or charged twice
        assert not Reservation.objects.filter(status=ReservationStatus.OPEN).exists()
        generation.refresh_from_db()
        settled = list(Reservation.objects.filter(status=ReservationStatus.SETTLED))
        if generation.status == GenerationStatus.INTERRUPTED:
            assert closed == 1
        else:  # settled and completed before the kill: the reaper left it alone
            assert (generation.status, closed, held_at_kill) == (
                GenerationStatus.COMPLETED, 0, 0
            )  # fmt: skip
        used_in = sum(r.used_input_tokens for r in settled)
        used_out = sum(r.used_output_tokens for r in settled)
        assert (generation.prompt_tokens, generation.completion_tokens) == (used_in, used_out)
        assert tokens(buyer.user, IN) == (HELD - used_in, 0)
        assert tokens(buyer.user, OUT) == (HELD - used_out, 0)
        lots = {lot.market.symbol: lot for lot in Lot.objects.filter(holder=buyer.user)}
        assert lots[IN].delivered_tokens + lots[IN].credited_tokens == used_in
        assert lots[OUT].delivered_tokens + lots[OUT].credited_tokens == used_out
        assert lots[OUT].reserved_tokens == lots[IN].reserved_tokens == 0
        if point != "after_last_token":
            # killed before settling: the reaper released the reservation, nothing charged
            assert generation.status == GenerationStatus.INTERRUPTED
            assert (used_in, used_out) == (0, 0)
        assert_audit_ok()

        # and: reaping again changes nothing; the restarted gateway serves and charges once
        assert generations_reap(older_than=timedelta(0)) == 0
        answer = client(server, key).chat.completions.create(
            model=MODEL, messages=BODY["messages"], max_tokens=3
        )
        assert answer.usage.completion_tokens == 3
        assert tokens(buyer.user, OUT) == (HELD - used_out - 3, 0)
        assert_audit_ok()
