"""Periodic escrow jobs (scheduled in ``CELERY_BEAT_SCHEDULE``). Each is idempotent: it pays or
retires only what the locked lots still owe, so a retry or an overlapping run changes nothing.
Reservations left open by a dead gateway process are released by the gateway's own reaper
(``generations_reap``, through ``reservations_reap``), which also closes their generations."""

from __future__ import annotations

from celery import shared_task

from exchange.delivery.escrow.services import escrow_release_due, lots_expire_due


@shared_task(acks_late=True)
def escrow_release_task() -> int:
    """Pay providers what their lots earned (one ledger transaction per provider and market)."""
    return escrow_release_due()


@shared_task(acks_late=True)
def lots_expire_task() -> int:
    """Take-or-pay: retire the unconsumed tokens of expired lots, pay their escrow."""
    return lots_expire_due()
