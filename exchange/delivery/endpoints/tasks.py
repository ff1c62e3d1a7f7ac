"""Periodic endpoint jobs (scheduled in ``CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

from celery import shared_task

from exchange.delivery.endpoints.services import endpoints_probe


# Not acks_late: a probe run that dies half-way is simply the next interval's to redo, and a
# redelivered run would probe twice within one interval (double samples in the statistics).
@shared_task(name="exchange.delivery.endpoints.tasks.endpoints_probe_task", acks_late=False)
def endpoints_probe_task() -> dict[str, int]:
    """Probe every endpoint, record health and samples, fire the dead-man switch, prune."""
    return endpoints_probe()
