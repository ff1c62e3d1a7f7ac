"""Group commit for the gateway's reservations: concurrent opens (or settles) of one process
share one database transaction, as the order intake does for orders (``orders.intake``).

A reservation's transaction costs mostly round trips, statement compilation and a durable
commit, not work; and every settle moves the same system rows (DELIVERED per market), which
serialised concurrent settles on their row locks. When several threads of a process open (or
settle) at the same moment, the first becomes the *leader*: it takes every item queued so far
(its own included) and processes them together; each item gets its own answer exactly as if it
had been processed alone. The others wait for their answer; whoever still has an unanswered item
when the leader is done leads the next group. A lone call leads a group of one, so nothing waits
for company (no timer), and no thread or connection of its own is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from django.db import connection

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class _Slot:
    __slots__ = ("done", "item", "outcome")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.outcome: Any = None
        self.done = False


class GroupCommit(Generic[Item, Outcome]):
    """``run(item)``: ``process([item, …])`` for whatever this process queued meanwhile;
    ``run_many(items)`` the same for a caller's whole batch.

    ``process`` returns one outcome per item, in order: a result, or an exception instance that
    ``run`` raises for that item alone. An exception raised by ``process`` itself (the database
    went away) fails every item of its group alike.
    """

    def __init__(self, process: Callable[[list[Item]], Sequence[Any]], limit: int) -> None:
        self.process = process
        self.limit = limit
        self._condition = threading.Condition()
        self._queue: list[_Slot] = []
        self._leading = False

    def run(self, item: Item) -> Outcome:
        return self._answer(self.run_many([item])[0])

    def run_many(self, items: list[Item]) -> list[Any]:
        """The outcomes of ``items`` (results, or exception instances: not raised), processed
        with whatever else is queued (one caller with a whole batch makes one group)."""
        if not items:
            return []
        if connection.in_atomic_block:
            # inside the caller's transaction: its own work must not join another's commit
            return self._group_process(list(items))
        mine = [_Slot(item) for item in items]
        with self._condition:
            self._queue.extend(mine)
            while self._leading and not all(slot.done for slot in mine):
                self._condition.wait()
            if all(slot.done for slot in mine):
                return [slot.outcome for slot in mine]
            self._leading = True
        try:
            while not all(slot.done for slot in mine):
                with self._condition:
                    group = self._queue[: self.limit]
                    del self._queue[: self.limit]
                outcomes: list[Any] = []
                try:
                    outcomes = self._group_process([s.item for s in group])
                except Exception as error:
                    outcomes = [error] * len(group)
                finally:
                    with self._condition:
                        for number, member in enumerate(group):
                            member.outcome = (
                                outcomes[number]
                                if number < len(outcomes)
                                else RuntimeError("the group was interrupted")
                            )
                            member.done = True
                        self._condition.notify_all()
        finally:
            with self._condition:
                self._leading = False
                self._condition.notify_all()
        return [slot.outcome for slot in mine]

    def _group_process(self, items: list[Item]) -> list[Any]:
        outcomes = list(self.process(items))
        if len(outcomes) != len(items):
            raise RuntimeError("a group's outcomes do not match its items")
        return outcomes

    @staticmethod
    def _answer(outcome: Any) -> Any:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
