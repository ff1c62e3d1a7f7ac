"""Requests of one process that wait for the runner share their reads of the orders table.

When the runner announces a commit, every request of the process waiting on that market wakes
(``exchange.runner.progress``). Instead of each re-reading its own orders, the first to ask reads
the orders of *all* waiting requests in one query and the others take their rows from it: one
read per announcement per process, not one per waiting request. A request only takes rows from
a read that began after it asked, so it never sees a state older than the announcement that woke
it. Like ``orders.intake``, this uses the callers' own threads and connections.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

from orders.models import Order

_condition = threading.Condition()
_wanted: Counter[int] = Counter()  # order id -> requests waiting for it
_fresh: dict[int, Order] = {}  # the latest read of each wanted order
_started = 0  # reads begun
_finished = 0  # the number of the last read that ended
_reading = False


def want(order_ids: Iterable[int]) -> None:
    with _condition:
        _wanted.update(order_ids)


def unwant(order_ids: Iterable[int]) -> None:
    with _condition:
        for order_id in order_ids:
            _wanted[order_id] -= 1
            if _wanted[order_id] <= 0:
                del _wanted[order_id]
                _fresh.pop(order_id, None)


def read(order_ids: Iterable[int]) -> dict[int, Order]:
    """The (wanted) orders ``order_ids`` as a query begun after this call found them; an order
    the query did not return is left out."""
    global _started, _finished, _reading
    with _condition:
        need = _started + 1
        while _finished < need:
            if not _reading:
                _reading = True
                _started += 1
                number = _started
                batch = list(_wanted)
                break
            _condition.wait()
        else:
            return {i: _fresh[i] for i in order_ids if i in _fresh}
    found: dict[int, Order] | None = None
    try:
        found = {
            o.id: o for o in Order.objects.select_related("market").filter(id__in=batch).order_by()
        }
    finally:
        with _condition:
            if found is not None:
                for order_id, order in found.items():
                    if order_id in _wanted:
                        _fresh[order_id] = order
                _finished = number
            # a failed read counts for nobody: the others waiting for it read again themselves
            _reading = False
            _condition.notify_all()
    return {i: found[i] for i in order_ids if i in found}
