"""The gateway's batched thread hops (``hops.Batcher``): calls queued while a batch runs form
the next batch, with no timer; each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import threading

import pytest

from exchange.delivery.gateway.hops import Batcher

pytestmark = pytest.mark.django_db(transaction=True)


def test_calls_queued_while_a_batch_runs_form_the_next_batch() -> None:
    batches: list[list[int]] = []
    release = threading.Event()

    def process(items: list[int]) -> list[object]:
        batches.append(list(items))
        if len(batches) == 1:
            release.wait(5)  # the first batch is still running while the others queue
        return [ValueError(item) if item == 3 else item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(process)

    async def run() -> list[object]:
        first = asyncio.ensure_future(batcher.run(0))
        await asyncio.sleep(0.05)
        others = [asyncio.ensure_future(batcher.run(n)) for n in (1, 2, 3, 4)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *others, return_exceptions=True)

    answers = asyncio.run(run())

    assert batches == [[0], [1, 2, 3, 4]]
    assert answers[:3] == [0, 10, 20]
    assert isinstance(answers[3], ValueError)  # only its own caller sees its error
    assert answers[4] == 40


def test_a_lone_call_waits_for_nobody_and_a_failing_batch_fails_its_members() -> None:
    def broken(items: list[int]) -> list[object]:
        raise RuntimeError("the database went away")

    async def run() -> tuple[int, list[object]]:
        alone = await Batcher(lambda items: [item + 1 for item in items]).run(1)
        failing: Batcher[int, int] = Batcher(broken)
        failed = await asyncio.gather(failing.run(1), failing.run(2), return_exceptions=True)
        return alone, failed

    alone, failed = asyncio.run(run())

    assert alone == 2
    assert [type(outcome) for outcome in failed] == [RuntimeError, RuntimeError]


def test_a_caller_that_stops_waiting_leaves_the_others_answered() -> None:
    release = threading.Event()

    def process(items: list[int]) -> list[object]:
        release.wait(5)
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(process)

    async def run() -> list[object]:
        gone = asyncio.ensure_future(batcher.run(1))
        stays = asyncio.ensure_future(batcher.run(2))
        await asyncio.sleep(0.05)
        gone.cancel()
        release.set()
        return await asyncio.gather(gone, stays, return_exceptions=True)

    gone, stays = asyncio.run(run())

    assert isinstance(gone, asyncio.CancelledError)
    assert stays == 20


def test_a_batchs_generation_rows_are_inserted_in_one_statement_as_django_would(
    pair, make_trader
) -> None:
    """The begin hop's raw insert writes what ``bulk_create`` would (every column, the model's
    defaults), returns the ids in order, and commits in one round trip (no BEGIN/COMMIT)."""
    from django.db import connection
    from django.forms.models import model_to_dict
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from exchange.delivery.gateway.batches import _generations_insert
    from exchange.delivery.gateway.models import Generation

    buyer = make_trader()
    now = timezone.now()

    def row(public_id: str, stream: bool) -> Generation:
        return Generation(
            public_id=public_id, buyer=buyer.user, api_key=None, model_id=pair.model_id,
            input_market=pair.input_market, output_market=pair.output_market, stream=stream,
            reserved_input_tokens=7, reserved_output_tokens=300, currency="CNY", created_at=now,
        )  # fmt: skip

    with CaptureQueriesContext(connection) as queries:
        ids = _generations_insert([row("gen-raw-1", True), row("gen-raw-2", False)])
    reference = [row("gen-orm-1", True), row("gen-orm-2", False)]
    Generation.objects.bulk_create(reference)

    assert len(queries) == 1
    written = [Generation.objects.get(pk=pk) for pk in ids]
    assert [g.public_id for g in written] == ["gen-raw-1", "gen-raw-2"]
    for raw, orm in zip(written, reference, strict=True):
        orm.refresh_from_db()
        expected = {**model_to_dict(orm), "id": raw.pk, "public_id": raw.public_id}
        assert model_to_dict(raw) == expected
