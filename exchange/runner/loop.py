"""The runner loop: take the markets whose locks we can get, process their commands, expire
GTD orders when due, and wait briefly when idle."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from django.db import connection, transaction
from django.utils import timezone

from exchange.markets.models import Market
from exchange.runner.core import RESTING, MarketRunner
from exchange.runner.embedded import NOTIFY_CHANNEL
from exchange.runner.locks import market_lock_release, market_lock_try
from orders.models import CommandKind, Order, OrderCommand

logger = logging.getLogger(__name__)


def expire_due_orders(*, market: Market) -> int:
    """Journal an expire command for each GTD order past its time (once)."""
    now = timezone.now()
    due = list(
        Order.objects.filter(
            market=market, status__in=RESTING, time_in_force="GTD", expire_time__lte=now
        ).values_list("id", flat=True)[:500]
    )
    if not due:
        return 0
    already = set(
        OrderCommand.objects.filter(
            order_id__in=due, kind__in=(CommandKind.CANCEL, CommandKind.EXPIRE), seq__isnull=True
        ).values_list("order_id", flat=True)
    )
    todo = [order_id for order_id in due if order_id not in already]
    with transaction.atomic():
        OrderCommand.objects.bulk_create(
            [OrderCommand(market=market, order_id=i, kind=CommandKind.EXPIRE) for i in todo]
        )
    return len(todo)


class RunnerLoop:
    """Runs every market it can lock. ``symbols`` limits it to some markets (sharding)."""

    def __init__(
        self,
        symbols: Iterable[str] | None = None,
        *,
        idle_sleep: float = 0.005,
        wake: threading.Event | None = None,
    ) -> None:
        self.symbols = list(symbols) if symbols else None
        self.idle_sleep = idle_sleep
        self.runners: dict[int, MarketRunner] = {}
        self.stop = threading.Event()
        self.wake = wake or threading.Event()
        self._last_expiry = 0.0
        self._last_claim = 0.0
        self.listening = False

    def claim(self) -> None:
        markets = Market.objects.all()
        if self.symbols is not None:
            markets = markets.filter(symbol__in=self.symbols)
        for market in markets:
            if market.id in self.runners:
                self.runners[market.id].market = market
                continue
            if market_lock_try(market.id):
                logger.info("runner took market %s", market.symbol)
                self.runners[market.id] = MarketRunner(market)

    def release(self) -> None:
        for market_id in list(self.runners):
            try:
                market_lock_release(market_id)
            except Exception:  # the connection may already be gone; the lock went with it
                logger.warning("could not release lock of market %s", market_id)
        self.runners.clear()

    def run_once(self) -> int:
        now = time.monotonic()
        if now - self._last_claim > 1.0:
            self.claim()
            self._last_claim = now
        if now - self._last_expiry > 0.5:
            for runner in self.runners.values():
                expire_due_orders(market=runner.market)
            self._last_expiry = now
        done = 0
        for runner in list(self.runners.values()):
            try:
                done += runner.step()
            except Exception:
                logger.exception("runner step failed for %s; rebuilding", runner.market.symbol)
                if self._recover():
                    return 0
                time.sleep(0.1)
        for runner in self.runners.values():
            try:  # public data held back by the coalescing window, once it is due
                runner.feed_flush()
            except Exception:  # the feed must never stop matching; clients resync by seq
                logger.exception("publishing %s failed", runner.market.symbol)
        return done

    def _recover(self) -> bool:
        """If the database session is gone (and our advisory locks with it), drop every market
        so that the next turn re-claims them on a new session. Returns whether it was gone."""
        if connection.connection is not None and connection.is_usable():
            return False
        logger.error("database session lost: dropping all markets to re-claim")
        self.runners.clear()
        connection.close()
        self.listening = False
        self._last_claim = 0.0
        return True

    def _wait(self) -> None:
        """Sleep until woken (NOTIFY from order intake, or the in-process event), until held-back
        public data is due, or the idle timeout."""
        timeout = self.idle_sleep
        for runner in self.runners.values():
            due = runner.feed_due()
            if due is not None:
                timeout = min(timeout, max(due, 0.001))
        if self.listening:
            try:
                raw = connection.connection
                woken = list(raw.notifies(timeout=timeout, stop_after=1))
                if woken:
                    # one wake-up serves every order journalled so far: drain the rest (the
                    # generators hold the connection's lock: never nest them)
                    list(raw.notifies(timeout=0.001))
            except Exception:  # the session broke; run_once notices and re-claims
                logger.warning("waiting for notifications failed", exc_info=True)
                self.listening = False
                time.sleep(timeout)
            return
        self.wake.wait(timeout)
        self.wake.clear()

    def _listen(self) -> None:
        if not self.listening:
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening = True

    def run_forever(self, *, on_ready: Callable[[list[str]], None] | None = None) -> None:
        # This thread keeps ONE database session for its whole life: the advisory locks live
        # in it (never call close_old_connections here).
        self.claim()
        self._last_claim = time.monotonic()
        if on_ready is not None:
            on_ready([runner.market.symbol for runner in self.runners.values()])
        try:
            while not self.stop.is_set():
                try:
                    done = self.run_once()
                except Exception:
                    # claim() and expiry run outside the steps: a lost session surfaces here
                    logger.exception("runner loop failed; recovering")
                    self._recover()
                    time.sleep(0.5)
                    continue
                if done == 0:
                    try:
                        if connection.connection is None or not self.listening:
                            self.listening = False
                            self._listen()
                    except Exception as error:
                        # the database is unreachable: keep the thread, retry until it is back
                        # (an exception here once ended the runner until a restart)
                        logger.warning("runner cannot listen: %s: %s", type(error).__name__, error)
                        self._recover()
                        time.sleep(0.5)
                        continue
                    self._wait()
        finally:
            self.release()
            connection.close()
