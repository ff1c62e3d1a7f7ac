"""Logging filters named by ``LOGGING`` in settings: one line per request, refusals without alarm.

Imported while logging is configured, before the apps are loaded: standard library only (structlog
only inside the JSON formatter's factory).
"""

from __future__ import annotations

import logging


class ClientErrorsOnceFilter(logging.Filter):
    """Drops ``django.request``'s line for a 4xx answer.

    The server's access log (daphne's runserver, uvicorn) already logs every request once with
    its status; Django's extra WARNING for a 404 or a 403 said it a second time, and for a
    ``PermissionDenied`` — a refusal we expect, not a fault — it added a traceback. Server errors
    (5xx) keep their line and traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        return not (isinstance(status, int) and 400 <= status < 500)


class ClientErrorsAtInfoFilter(logging.Filter):
    """Logs the access line of a 4xx answer at INFO (daphne's runserver says WARNING).

    A client asking for a missing page or one it may not see is routine; WARNING is kept for
    what an operator should look at.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        details = record.args if isinstance(record.args, dict) else {}
        status = details.get("status")
        if isinstance(status, int) and 400 <= status < 500 and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


def json_formatter() -> logging.Formatter:
    """``LOG_FORMAT=json``: every record (the standard library's and structlog's) as one JSON
    object — time (UTC, ISO 8601), level, logger, event, and the context bound to the request
    that caused it (``request_id``, bound by ``exchange.metrics.RequestEdge``)."""
    import structlog

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def refusal_expected(request: object) -> None:
    """Mark ``request``'s answer as an expected refusal (``ExchangeError.expected``): Django's
    ``django.request`` line for it is then logged at INFO (``ExpectedRefusalsAtInfoFilter``)."""
    if request is not None:
        request._expected_refusal = True  # type: ignore[attr-defined]


class ExpectedRefusalsAtInfoFilter(logging.Filter):
    """``django.request`` logs every 5xx at ERROR; a refusal we meant (503 ``funding_disabled``
    on an exchange without Stripe keys) is routine, so its line goes out at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if getattr(request, "_expected_refusal", False) and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True
