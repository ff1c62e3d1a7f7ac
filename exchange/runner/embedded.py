"""The runner inside the served process (``ENGINE_RUNNER=embedded``, the default of
``make run``) or inline in the request thread (``ENGINE_RUNNER=inline``, used by tests).
With ``ENGINE_RUNNER=external`` separate ``run_engine`` processes do the work and ``notify``
does nothing: they poll the journal.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connection

from exchange.markets.models import Market
from exchange.runner.core import MarketRunner

logger = logging.getLogger(__name__)

_inline_runners: dict[int, MarketRunner] = {}
_inline_lock = threading.Lock()
_thread: threading.Thread | None = None
_wake = threading.Event()


NOTIFY_CHANNEL = "exchange_engine"


def notify(market: Market) -> None:
    """Wake the market's runner: call after the transaction that journalled commands."""
    mode = settings.ENGINE_RUNNER
    if mode == "inline":
        inline_process(market)
    elif mode == "embedded":
        _wake.set()
    if mode != "inline":
        # Runners in other processes LISTEN; they also poll, so a lost wake-up only delays.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(market.id)])


def inline_process(market: Market) -> int:
    """Process the market's pending commands now, in this thread."""
    with _inline_lock:
        runner = _inline_runners.get(market.id)
        if runner is None:
            # inline: nothing runs between requests to publish later, so publish every batch
            runner = _inline_runners[market.id] = MarketRunner(market, feed_window=0.0)
        runner.market = market
        total = 0
        while True:
            done = runner.step()
            total += done
            if not done:
                return total


def inline_reset() -> None:
    """Forget in-memory books (tests roll the database back between cases)."""
    with _inline_lock:
        _inline_runners.clear()


def embedded_start() -> None:
    """Start the runner thread once per process (called by the ASGI app)."""
    global _thread
    if settings.ENGINE_RUNNER != "embedded" or _thread is not None:
        return
    from exchange.runner.loop import RunnerLoop

    loop = RunnerLoop(wake=_wake, idle_sleep=0.05)
    _thread = threading.Thread(target=loop.run_forever, name="engine-runner", daemon=True)
    _thread.start()
    logger.info("embedded engine runner started")
