"""Escrow jobs inside the served process, for ``make run`` (no Celery beat there: tasks run
eagerly and nothing schedules them). Production runs the beat tasks of
``exchange.delivery.escrow.tasks``; these are the same calls, each idempotent."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

_thread: threading.Thread | None = None
_stop = threading.Event()


def escrow_jobs_start() -> None:
    """Start the thread once, when the demo is on and no beat schedules the tasks (eager
    Celery): lot expiry and escrow release every DELIVERY_ESCROW_RELEASE_SECONDS."""
    global _thread
    if _thread is not None or not settings.DEMO or not settings.CELERY_TASK_ALWAYS_EAGER:
        return

    def run() -> None:
        from exchange.delivery.escrow.services import escrow_release_due, lots_expire_due

        try:
            while not _stop.wait(settings.DELIVERY_ESCROW_RELEASE_SECONDS):
                # expiry pays what it retires, and all other earned escrow
                for job in (lots_expire_due, escrow_release_due):
                    try:
                        job()
                    except Exception:
                        logger.exception("escrow job failed; trying again next interval")
                    finally:
                        close_old_connections()
        finally:
            connection.close()

    _thread = threading.Thread(target=run, name="escrow-jobs", daemon=True)
    _thread.start()


def escrow_jobs_stop() -> None:
    _stop.set()
