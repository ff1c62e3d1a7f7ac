"""The gateway's thread hops: how the event loop hands database work to threads.

A request's database work runs in a thread (Django's ORM and psycopg are blocking), never on
the event loop. Two kinds of hop:

- ``database_thread(function)``: one call, one hop (the rare ones: a failed attempt, the model
  list, an aborted request).
- ``Batcher``: the two hops every request takes (begin, finish) in batches. Calls queue on the
  event loop; when no batch of that kind is running, the first call starts one thread hop that
  takes EVERY call queued so far (no timer: a lone call is a batch of one, and waits for
  nobody); calls that arrive meanwhile form the next batch. The batch function gets the items
  and returns an outcome per item (a result, or an exception for that item alone), so each
  request is answered as if alone. Measured on the benchmark (docs/performance.md): a thread
  per request, each queueing in the escrow group commit, made groups of ~6 and a convoy of 8-40
  threads fighting for the GIL at every round trip; one hop per batch makes groups of the whole
  batch and one thread the GIL passes to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

T = TypeVar("T")
Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

_executor: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=settings.GATEWAY_DATABASE_THREADS, thread_name_prefix="gateway-db"
        )
    return _executor


def _with_connection(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` with Django's request-boundary connection handling around it (a pooled
    connection goes back to the pool)."""

    def run(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return run


def database_thread(function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """``function`` in the gateway's database threads, one call per hop."""
    return sync_to_async(_with_connection(function), thread_sensitive=False, executor=_threads())


class Batcher(Generic[Item, Outcome]):
    """``await batcher.run(item)``: ``process([item, …])`` in a database thread, for every item
    queued while the previous batch ran (at most ``limit`` a batch). ``process`` returns one
    outcome per item, in order: a result, or an exception instance raised for that item alone;
    an exception raised by ``process`` itself fails every item of its batch alike.

    One batch of a kind at a time per event loop: the batch is the unit of work of the database
    (one transaction per stage for all its requests). A caller that stops waiting (cancelled)
    does not stop its item: the batch's outcome for it is dropped, as a thread's would be."""

    def __init__(self, process: Callable[[list[Item]], Sequence[Any]], limit: int = 200) -> None:
        self.process = process
        self.limit = limit
        self._queue: list[tuple[Item, asyncio.Future[Any]]] = []
        self._running: asyncio.Task[None] | None = None

    async def run(self, item: Item) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._running is None or self._running.get_loop() is not loop:
            # a batcher outlives an event loop only in tests: what the old one left is dropped
            self._queue = [entry for entry in self._queue if entry[1].get_loop() is loop]
            self._queue.append((item, future))
            self._running = loop.create_task(self._drain())
        else:
            self._queue.append((item, future))
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.limit], self._queue[self.limit :]
                items = [item for item, _ in batch]
                try:
                    outcomes = list(
                        await loop.run_in_executor(
                            _threads(), _with_connection(self.process), items
                        )
                    )
                    if len(outcomes) != len(batch):
                        raise RuntimeError("a batch's outcomes do not match its items")
                except Exception as error:
                    outcomes = [error] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            self._running = None
            for _, future in self._queue:  # only when cancelled (the loop is closing)
                if not future.done():
                    future.cancel()
            self._queue = []
