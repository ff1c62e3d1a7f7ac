"""200 simultaneous requests through the live gateway against an allocation that covers 50:
exactly what is held is served, nothing is overdrawn, every reservation settles or is released,
and the ledger audit holds."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from exchange.delivery.escrow.models import Lot, Reservation, ReservationStatus
from exchange.delivery.gateway.metering import estimate_prompt_tokens
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.ledger import selectors as ledger_selectors
from tests.delivery.escrow.conftest import assert_audit_ok
from tests.delivery.gateway.conftest import IN, MODEL, OUT, buy, consume_key

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Concurrent."}]
COMPLETION = 200  # the demo answers exactly max_tokens: usage equals the reservation
REQUESTS = 200
COVERED = 50  # 0.01 MTok of output = 10,000 tokens = 50 × 200


async def _fire(base: str, key: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=REQUESTS)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{base}/v1/chat/completions",
                    json={"model": MODEL, "messages": MESSAGES, "max_tokens": COMPLETION},
                    headers={"Authorization": f"Bearer {key}"},
                )
                for _ in range(REQUESTS)
            )
        )


def test_simultaneous_requests_never_overdraw(server, make_provider, make_trader):
    make_provider(server.base, "alpha", f"ttft=20,tps=2000,len={COMPLETION}")
    buyer = make_trader(cny=10)
    buy(buyer)
    key = consume_key(buyer.user)

    responses = asyncio.run(_fire(server.base, key))

    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == COVERED
    assert statuses.count(402) == REQUESTS - COVERED
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert refused["code"] == "insufficient_allocation"
    prompt = estimate_prompt_tokens(MESSAGES)
    out = ledger_selectors.balance_get(user=buyer.user, asset=OUT)
    assert (out.available, out.held) == (0, 0)
    inp = ledger_selectors.balance_get(user=buyer.user, asset=IN)
    assert (inp.available, inp.held) == (10_000 - COVERED * prompt, 0)
    assert not Reservation.objects.filter(status=ReservationStatus.OPEN).exists()
    assert Reservation.objects.filter(status=ReservationStatus.SETTLED).count() == COVERED
    assert Generation.objects.filter(status=GenerationStatus.COMPLETED).count() == COVERED
    # requests that lost the race for the lots after their generation was written (in a batch:
    # many) are closed as refused, none left in progress
    assert not Generation.objects.filter(status=GenerationStatus.IN_PROGRESS).exists()
    refused_codes = Generation.objects.filter(status=GenerationStatus.FAILED).values_list(
        "error_code", flat=True
    )
    assert set(refused_codes) <= {"insufficient_allocation"}
    lot = Lot.objects.get(holder=buyer.user, market__symbol=OUT)
    assert (lot.delivered_tokens, lot.reserved_tokens) == (COVERED * COMPLETION, 0)
    assert_audit_ok()
