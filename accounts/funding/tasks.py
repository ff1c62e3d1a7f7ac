"""Funding jobs: process a stored Stripe event, make a payout, reconcile with Stripe.

Every task takes ids and is safe to run twice (or concurrently with itself). Money tasks use
``acks_late`` with ``reject_on_worker_lost``: a worker that dies mid-task leaves the message
to be redelivered, and the redelivery finds the work done or repeats the Stripe call with the
same Idempotency-Key.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery.exceptions import MaxRetriesExceededError
from django.conf import settings
from django.utils import timezone

from accounts.funding import services, stripe_gateway
from accounts.funding.reconciliation import reconcile_run
from accounts.funding.stripe_gateway import StripeAmbiguousError
from exchange.celery import app

logger = logging.getLogger(__name__)

MONEY_TASK = {"acks_late": True, "reject_on_worker_lost": True}


@app.task(name="accounts.funding.tasks.stripe_event_process_task", **MONEY_TASK)
def stripe_event_process_task(event_id: int) -> str:
    return services.stripe_event_process(event_id=event_id)


@app.task(
    bind=True, name="accounts.funding.tasks.withdrawal_payout_task", max_retries=8, **MONEY_TASK
)
def withdrawal_payout_task(self: Any, withdrawal_id: int) -> str:
    # Run eagerly (no broker: `make run`, tests) there is no queue to come back later, so the
    # attempts happen here; with a broker, Celery retries later with a growing countdown.
    attempts = self.max_retries + 1 if self.request.is_eager else 1
    for _attempt in range(attempts):
        try:
            return services.withdrawal_payout(withdrawal_id=withdrawal_id)
        except StripeAmbiguousError as error:
            # Same withdrawal id → same Idempotency-Key on the next attempt.
            logger.warning("Payout of withdrawal %s: no definite answer (%s)", withdrawal_id, error)
            undecided = error
    if not self.request.is_eager:
        try:
            raise self.retry(exc=undecided, countdown=min(600, 5 * 2**self.request.retries))
        except MaxRetriesExceededError:
            pass
    logger.error(
        "Payout of withdrawal %s still undecided after retries; the reconciliation sweep "
        "will try again with the same key.",
        withdrawal_id,
    )
    return "processing"


@app.task(name="accounts.funding.tasks.stripe_reconcile_task")
def stripe_reconcile_task() -> dict[str, object]:
    """Reconcile the recent window with Stripe; re-send stuck payouts and events."""
    if not stripe_gateway.is_enabled():
        return {"skipped": "funding disabled"}
    now = timezone.now()
    # The last quarter hour is left to webhooks still in flight.
    until = now - timedelta(minutes=15)
    since = until - timedelta(hours=settings.STRIPE_RECONCILE_WINDOW_HOURS)
    report = reconcile_run(since=since, until=until)
    resent = services.withdrawals_retry_stuck(older_than=timedelta(minutes=10))
    events = services.stripe_events_retry(older_than=timedelta(minutes=5))
    return {
        "report": report.pk,
        "differences": len(report.differences),
        "payouts_resent": resent,
        "events_resent": events,
    }
