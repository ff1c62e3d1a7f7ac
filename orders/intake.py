"""Group commit: concurrent single orders in one process share one intake transaction.

Each order's transaction (hold, order row, journalled command) costs mostly round trips and a
commit, not work. When several requests of a process place orders at the same moment, the first
becomes the *leader*: it takes every order queued so far (its own included) and places them
together with ``orders.services._place_group``, which gives each order its own answer exactly as
if it had been placed alone (a refusal or a replayed ``client_order_id`` falls back to one
transaction per order). The others wait for their answer; whoever still has an unanswered order
when the leader is done leads the next group. A lone request leads a group of one, so nothing
waits for company, and every caller's thread does its own share: there is no background thread
and no connection of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import connection

if TYPE_CHECKING:
    from accounts.models import User
    from exchange.errors import ExchangeError
    from orders.models import Order
    from orders.services import OrderRequest

    Outcome = tuple[Order, bool] | ExchangeError
    Placer = Callable[[list[tuple[User, OrderRequest]]], list[Outcome]]

# At most this many orders per shared transaction (a batch request's own limit).
GROUP_LIMIT = 50


class _Item:
    __slots__ = ("outcome", "request", "user")

    def __init__(self, user: Any, request: Any, outcome: Any = None) -> None:
        self.user = user
        self.request = request
        self.outcome = outcome  # (order, created), an ExchangeError, or an unexpected error


_condition = threading.Condition()
_queue: list[_Item] = []
_leading = False


def group_place(user: User, request: OrderRequest, place: Placer) -> tuple[Order, bool]:
    """Place one order, in a group with whatever other orders this process is placing now."""
    global _leading
    if connection.in_atomic_block:  # someone else's order must not join the caller's transaction
        return _answer(_Item(user, request, place([(user, request)])[0]))
    item = _Item(user, request)
    with _condition:
        _queue.append(item)
        while item.outcome is None and _leading:
            _condition.wait()
        if item.outcome is None:
            _leading = True
        else:  # a leader placed it
            return _answer(item)
    try:
        while item.outcome is None:
            with _condition:
                group = _queue[:GROUP_LIMIT]
                del _queue[:GROUP_LIMIT]
            outcomes: list[Any] = []
            try:
                outcomes = list(place([(i.user, i.request) for i in group]))
            except Exception as error:  # the database is gone: every order in it fails alike
                outcomes = [error] * len(group)
            finally:
                with _condition:
                    for number, member in enumerate(group):
                        member.outcome = (
                            outcomes[number]
                            if number < len(outcomes)
                            else RuntimeError("the order's group was interrupted")
                        )
                    _condition.notify_all()
    finally:
        with _condition:
            _leading = False
            _condition.notify_all()
    return _answer(item)


def _answer(item: _Item) -> tuple[Order, bool]:
    if isinstance(item.outcome, BaseException):
        raise item.outcome
    return item.outcome  # type: ignore[no-any-return]
