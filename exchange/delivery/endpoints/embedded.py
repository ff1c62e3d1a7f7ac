"""Health probes inside the served process, for ``make run`` (no Celery beat there: tasks run
eagerly and nothing schedules them). Production runs ``endpoints_probe_task`` from beat."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

_thread: threading.Thread | None = None
_stop = threading.Event()


def probes_start() -> None:
    """Start the probe thread once, when the demo is on and no beat schedules the task (eager
    Celery). Every DELIVERY_PROBE_INTERVAL_SECONDS it runs what the beat task runs."""
    global _thread
    if _thread is not None or not settings.DEMO or not settings.CELERY_TASK_ALWAYS_EAGER:
        return

    def run() -> None:
        from exchange.delivery.endpoints.services import endpoints_probe

        # The first run waits an interval: the served process is still starting to listen.
        try:
            while not _stop.wait(settings.DELIVERY_PROBE_INTERVAL_SECONDS):
                try:
                    endpoints_probe()
                except Exception:
                    logger.exception("endpoint probes failed; trying again next interval")
                finally:
                    close_old_connections()
        finally:
            connection.close()

    _thread = threading.Thread(target=run, name="endpoint-probes", daemon=True)
    _thread.start()


def probes_stop() -> None:
    _stop.set()
