"""The market simulator: bots placing and cancelling realistic orders around a drifting price.

Bots go through the same order services as every user (validation, holds, the journal, the
engine runner), so the demo exercises the real system. Market makers quote both sides around a
per-market "fair" price that follows a mean-reverting random walk; takers cross the spread with
small immediate-or-cancel orders, so trades print, candles form and the book moves.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import close_old_connections

from accounts.models import User
from exchange.errors import ExchangeError, InsufficientFunds
from exchange.markets.models import Market, MarketStatus
from orders.models import OPEN_STATUSES, Order
from orders.selectors import engine_state_get
from orders.services import order_cancel, order_place, order_request_parse

logger = logging.getLogger(__name__)

MAX_OPEN_PER_MAKER = 10


@dataclass
class Bot:
    user: User
    role: str  # "maker" or "taker"


@dataclass
class MarketState:
    market: Market
    reference_ticks: int
    fair: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.fair = float(self.reference_ticks)


class Simulator:
    def __init__(
        self,
        *,
        bots: int,
        rate: float,
        symbols: list[str] | None = None,
        seed: int | None = None,
    ) -> None:
        from exchange.demo.seed import demo_seed, reference_price

        self.random = random.Random(seed)
        self.rate = max(rate, 0.1)
        users = demo_seed()
        markets = Market.objects.filter(status=MarketStatus.OPEN).order_by("symbol")
        if symbols:
            markets = markets.filter(symbol__in=symbols)
        self.markets = []
        for market in markets:
            state = engine_state_get(market=market)
            reference = int(reference_price(market) / market.tick_size)
            if state is not None and state.last_trade_ticks:
                reference = state.last_trade_ticks
            self.markets.append(MarketState(market=market, reference_ticks=reference))
        if not self.markets:
            raise ExchangeError("No open markets to simulate.")
        makers = users["providers"]
        takers = users["buyers"]
        count = max(2, bots)
        self.bots = [Bot(makers[i % len(makers)], "maker") for i in range((count + 1) // 2)]
        self.bots += [Bot(takers[i % len(takers)], "taker") for i in range(count // 2)]
        self.sellers = makers
        self.placed = 0
        self.failures = 0

    # -- prices ------------------------------------------------------------------------------
    def drift(self, state: MarketState) -> None:
        """Mean-reverting random walk of the fair price in ticks (a float: a model, not money)."""
        shock = self.random.gauss(0.0, 0.0025)
        pull = 0.01 * math.log(state.reference_ticks / state.fair)
        state.fair = max(5.0, state.fair * math.exp(shock + pull))

    def quantity(self, market: Market) -> str:
        lots_min = int(market.min_quantity / market.lot_size)
        mtok = self.random.lognormvariate(0.0, 0.9)  # around 1 MTok, a long tail of larger ones
        lots = max(lots_min, int(Decimal(str(round(mtok, 3))) / market.lot_size))
        return format((market.lot_size * lots).normalize(), "f")

    @staticmethod
    def price(market: Market, ticks: int) -> str:
        return format((market.tick_size * max(1, ticks)).normalize(), "f")

    # -- actions -----------------------------------------------------------------------------
    def place(self, user: User, market: Market, **body: object) -> None:
        request = order_request_parse(market=market, **body)
        order_place(user=user, request=request)
        self.placed += 1

    def make(self, bot: Bot, state: MarketState) -> None:
        market = state.market
        open_orders = Order.objects.filter(user=bot.user, market=market, status__in=OPEN_STATUSES)
        if open_orders.count() >= MAX_OPEN_PER_MAKER or self.random.random() < 0.15:
            stale = sorted(
                open_orders.exclude(price_ticks=None).only("id", "price_ticks"),
                key=lambda o: abs(o.price_ticks - state.fair),
            )
            if stale:
                with contextlib.suppress(ExchangeError):
                    order_cancel(user=bot.user, order_id=stale[-1].id)
            return
        side = self.random.choice(("buy", "sell"))
        offset = 1 + int(self.random.expovariate(1 / 5))
        fair = round(state.fair)
        ticks = fair - offset if side == "buy" else fair + offset
        self.place(
            bot.user, market, side=side, type="limit", price=self.price(market, ticks),
            quantity=self.quantity(market), time_in_force="GTC",
        )  # fmt: skip

    def take(self, bot: Bot, state: MarketState) -> None:
        market = state.market
        engine = engine_state_get(market=market)
        # Lean towards the side that moves the last price to the fair price.
        last = engine.last_trade_ticks if engine and engine.last_trade_ticks else state.fair
        buy_bias = 0.5 + max(-0.3, min(0.3, (state.fair - last) / max(state.fair, 1) * 20))
        side = "buy" if self.random.random() < buy_bias else "sell"
        user = bot.user if side == "buy" else self.random.choice(self.sellers)
        best = (
            (engine.best_ask_ticks if side == "buy" else engine.best_bid_ticks) if engine else None
        )
        if best is None:
            return
        slack = max(1, round(state.fair * 0.004))
        ticks = best + slack if side == "buy" else best - slack
        self.place(
            user, market, side=side, type="limit", price=self.price(market, ticks),
            quantity=self.quantity(market), time_in_force="IOC",
        )  # fmt: skip

    def step(self) -> None:
        state = self.random.choice(self.markets)
        self.drift(state)
        bot = self.random.choice(self.bots)
        try:
            if bot.role == "maker":
                self.make(bot, state)
            else:
                self.take(bot, state)
        except InsufficientFunds:
            self.top_up()
        except ExchangeError as error:
            self.failures += 1
            logger.debug("demo bot order refused: %s", error)

    def top_up(self) -> None:
        from exchange.demo.seed import demo_seed

        demo_seed()

    def run(self, *, stop: threading.Event, duration: float | None = None) -> None:
        deadline = time.monotonic() + duration if duration else None
        last_top_up = time.monotonic()
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                self.step()
                if time.monotonic() - last_top_up > 300:
                    last_top_up = time.monotonic()
                    self.top_up()
            except Exception:  # the demo must keep running through a locked database etc.
                self.failures += 1
                logger.warning("demo simulator step failed", exc_info=True)
                close_old_connections()
                stop.wait(1.0)
            stop.wait(self.random.expovariate(self.rate))


_thread: threading.Thread | None = None
_stop = threading.Event()


def demo_start() -> None:
    """Start the demo simulator thread in the served process when DEMO is on (once)."""
    global _thread
    from django.conf import settings

    if not settings.DEMO or _thread is not None:
        return

    def run() -> None:
        try:
            simulator = Simulator(bots=settings.DEMO_BOTS, rate=settings.DEMO_RATE)
        except Exception:
            logger.exception("the demo could not start (are the database and markets ready?)")
            return
        logger.info(
            "demo simulator: %s bots, %.1f orders/s on %s markets",
            len(simulator.bots), simulator.rate, len(simulator.markets),
        )  # fmt: skip
        simulator.run(stop=_stop)

    _thread = threading.Thread(target=run, name="demo-simulator", daemon=True)
    _thread.start()


def demo_stop() -> None:
    _stop.set()
