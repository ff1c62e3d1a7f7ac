"""Periodic gateway jobs (``CELERY_BEAT_SCHEDULE``); idempotent, safe to retry or overlap."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from exchange.delivery.gateway.services import generations_reap


@shared_task(acks_late=True)
def generations_reap_task() -> int:
    """Close the generations (and release the reservations) a dead gateway process left open.
    The same age as the escrow reaper's: longer than any live request may last
    (``GATEWAY_MAX_REQUEST_SECONDS``)."""
    older_than = max(
        settings.DELIVERY_RESERVATION_TIMEOUT_SECONDS, settings.GATEWAY_MAX_REQUEST_SECONDS + 60
    )
    return generations_reap(older_than=timedelta(seconds=older_than))
