"""Periodic ledger jobs (scheduled in ``CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

import logging

from celery import shared_task

from exchange.ledger.selectors import audit_run

logger = logging.getLogger(__name__)


@shared_task(name="exchange.ledger.tasks.ledger_audit")
def ledger_audit() -> dict[str, object]:
    """Run the ledger audit; a mismatch is logged at ERROR level, which is what alerting watches."""
    report = audit_run()
    if report.is_ok:
        logger.info(report.render())
    else:
        logger.error("LEDGER AUDIT FAILED\n%s", report.render())
    return {"ok": report.is_ok, "problems": len(report.problems), "postings": report.postings}
