"""The market simulator: bots placing and cancelling realistic orders around a drifting price.

Bots go through the same order services as every user (validation, holds, the journal, the
engine runner), so the demo exercises the real system. Market makers quote both sides around a
per-market "fair" price that follows a mean-reverting random walk; takers cross the spread with
small immediate-or-cancel orders, so trades print, candles form and the book moves.
"""

from __future__ import annotations

import contextlib
import logging
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
from orders.units import lots_to_quantity, ticks_to_price

logger = logging.getLogger(__name__)

MAX_OPEN_PER_MAKER = 10
ORDER_SIZES_MTOK = tuple(
    Decimal(size) for size in ("0.05", "0.1", "0.25", "0.5", "1", "1", "1", "2", "3", "5", "10")
)


@dataclass
class Bot:
    user: User
    role: str  # "maker" or "taker"


@dataclass
class MarketState:
    market: Market
    reference_ticks: int
    fair: int = field(default=0)  # ticks

    def __post_init__(self) -> None:
        self.fair = self.reference_ticks


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
        """Mean-reverting random walk of the fair price, in whole ticks: steps of about 0.25% of
        the price, pulled back by 1% of the distance to the reference each step."""
        step = max(1, state.fair // 400) * self.random.randint(-2, 2)
        pull = (state.reference_ticks - state.fair) // 100
        state.fair = max(5, state.fair + step + pull)

    def quantity(self, market: Market) -> str:
        lots_min = int(market.min_quantity / market.lot_size)
        mtok = self.random.choice(ORDER_SIZES_MTOK)  # around 1 MTok, a tail of larger ones
        lots = max(lots_min, int(mtok / market.lot_size) + self.random.randint(0, lots_min))
        return lots_to_quantity(market, lots)

    @staticmethod
    def price(market: Market, ticks: int) -> str:
        return ticks_to_price(market, max(1, ticks)) or ""

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
        ticks = state.fair - offset if side == "buy" else state.fair + offset
        self.place(
            bot.user, market, side=side, type="limit", price=self.price(market, ticks),
            quantity=self.quantity(market), time_in_force="GTC",
        )  # fmt: skip

    def take(self, bot: Bot, state: MarketState) -> None:
        market = state.market
        engine = engine_state_get(market=market)
        # Lean towards the side that moves the last price to the fair price.
        last = engine.last_trade_ticks if engine and engine.last_trade_ticks else state.fair
        lean = max(-30, min(30, (state.fair - last) * 2000 // max(state.fair, 1)))  # percent
        side = "buy" if self.random.randrange(100) < 50 + lean else "sell"
        user = bot.user if side == "buy" else self.random.choice(self.sellers)
        best = (
            (engine.best_ask_ticks if side == "buy" else engine.best_bid_ticks) if engine else None
        )
        if best is None:
            return
        slack = max(1, state.fair // 250)
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
