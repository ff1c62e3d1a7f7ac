"""A round of reservations that fails as a whole (the database or Redis gone) gives back what the
batch's earlier rounds already granted: their reservations released, their endpoint slots given
back (review finding: they stayed open until the reaper and held their slots meanwhile)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from exchange.delivery.gateway import services
from exchange.delivery.gateway.services import Attempt


def test_a_failed_round_undoes_the_attempts_already_granted(monkeypatch) -> None:
    plans = [SimpleNamespace(public_id=f"gen-{n}") for n in range(3)]
    upstream = SimpleNamespace(endpoint_id=7)
    granted = Attempt(1, 11, "Alpha", 501, upstream)

    def rounds(plans, results) -> None:
        results[0] = granted  # round 1 granted the first plan
        results[1] = ValueError("its own refusal")  # a plan's own error: nothing to undo
        raise ConnectionError("Redis went away in round 2")

    released: list[int] = []
    given_back: list[tuple[str, int]] = []
    monkeypatch.setattr(services, "_attempt_rounds", rounds)
    monkeypatch.setattr(
        services, "reservation_release", lambda *, reservation_id: released.append(reservation_id)
    )
    monkeypatch.setattr(
        services,
        "_slot_give_back",
        lambda plan, attempt: given_back.append((plan.public_id, attempt.number)),
    )

    with pytest.raises(ConnectionError):
        services.attempts_open(plans)

    assert released == [501]
    assert given_back == [("gen-0", 1)]
