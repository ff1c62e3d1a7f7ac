"""The market simulator: bots quoting and trading around a mean-reverting price.

Bots go through the same order services as every user (validation, holds, the journal, the
engine runner), so the demo exercises the real system. Per market:

- the "fair" price follows ``exchange.demo.prices.PriceProcess`` around the market's fixed
  reference price (no drift, capped at half the price band);
- market makers keep ``LEVELS`` post-only quotes on each side within ``WINDOW`` ticks of the
  fair price, cancelling the quotes that left the window and replacing the ones taken, so both
  sides always show depth near the mid;
- takers cross the spread with small immediate-or-cancel orders, so trades print and candles
  form, and a newcomer's order near the mid is filled within seconds.

No bot trades outside the market's price band (``Market.price_band``) around the reference:
makers only post (a post-only order never takes, so it trades at its own, in-band price), and a
taker only crosses when the best opposite price is inside the band, with a limit inside it. A
stray order far from the reference therefore rests instead of being filled by a bot.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from django.db import close_old_connections
from django.db.models import Max, Min

from accounts.models import User
from exchange.demo.prices import PriceProcess, band_limits
from exchange.errors import ExchangeError, InsufficientFunds
from exchange.markets.models import Market, MarketStatus
from orders.models import OPEN_STATUSES, Order
from orders.selectors import engine_state_get
from orders.services import (
    OrderRequest,
    order_cancel,
    order_place,
    order_place_many,
    order_request_parse,
)
from orders.units import lots_to_quantity, ticks_to_price

logger = logging.getLogger(__name__)

LEVELS = 8  # quotes per side, refreshed after every taker's trade
WINDOW = 10  # ticks from the fair price a quote may rest at before it is stale
TAKER_SLACK_TICKS = 2  # how far past the best price a taker's limit reaches
MAKER_SIZES_MTOK = tuple(Decimal(size) for size in ("0.5", "1", "1", "2", "3", "5", "10"))
TAKER_SIZES_MTOK = tuple(Decimal(size) for size in ("0.05", "0.1", "0.25", "0.5", "1", "2"))


@dataclass
class Bot:
    user: User
    role: str  # "maker" or "taker"


@dataclass
class MarketState:
    market: Market
    process: PriceProcess
    low_ticks: int  # the price band around the reference, inclusive
    high_ticks: int

    @property
    def reference_ticks(self) -> int:
        return self.process.reference_ticks

    @property
    def fair(self) -> int:
        return self.process.fair_ticks

    def in_band(self, ticks: int) -> bool:
        return self.low_ticks <= ticks <= self.high_ticks


def reference_ticks(market: Market) -> int:
    from exchange.demo.seed import reference_price

    return int(reference_price(market) / market.tick_size)


def market_state_new(market: Market, rng: random.Random) -> MarketState:
    """The simulator's state of a market, continuing from its last trade (or last candle)."""
    from exchange.marketdata.models import Candle

    reference = reference_ticks(market)
    process = PriceProcess(reference_ticks=reference, band=market.price_band, rng=rng)
    engine = engine_state_get(market=market)
    last = engine.last_trade_ticks if engine is not None else None
    if last is None:
        last = (
            Candle.objects.filter(market=market, interval="1m")
            .order_by("-start")
            .values_list("close_ticks", flat=True)
            .first()
        )
    if last is not None:
        process.start_at(last)
    low, high = band_limits(reference, market.price_band)
    return MarketState(market=market, process=process, low_ticks=low, high_ticks=high)


class Simulator:
    def __init__(
        self,
        *,
        bots: int,
        rate: float,
        symbols: list[str] | None = None,
        seed: int | None = None,
    ) -> None:
        from exchange.demo.seed import demo_seed

        self.random = random.Random(seed)
        self.rate = max(rate, 0.1)
        users = demo_seed()
        markets = Market.objects.filter(status=MarketStatus.OPEN).order_by("symbol")
        if symbols:
            markets = markets.filter(symbol__in=symbols)
        self.markets = [market_state_new(market, self.random) for market in markets]
        if not self.markets:
            raise ExchangeError("No open markets to simulate.")
        makers = users["providers"]
        takers = users["buyers"]
        count = max(2, bots)
        self.bots = [Bot(makers[i % len(makers)], "maker") for i in range((count + 1) // 2)]
        self.bots += [Bot(takers[i % len(takers)], "taker") for i in range(count // 2)]
        self.makers = list(
            {bot.user.pk: bot.user for bot in self.bots if bot.role == "maker"}.values()
        )
        self.buyers = [bot.user for bot in self.bots if bot.role == "taker"]
        self.sellers = makers
        self.bot_ids = {user.pk for user in [*makers, *takers]}
        self.placed = 0
        self.cancelled = 0
        self.failures = 0

    # -- sizes and prices ---------------------------------------------------------------------
    def quantity(self, market: Market, sizes: tuple[Decimal, ...]) -> str:
        lots_min = int(market.min_quantity / market.lot_size)
        mtok = self.random.choice(sizes)
        lots = max(lots_min, int(mtok / market.lot_size) + self.random.randint(0, lots_min))
        return lots_to_quantity(market, lots)

    @staticmethod
    def price(market: Market, ticks: int) -> str:
        return ticks_to_price(market, max(1, ticks)) or ""

    # -- market makers ------------------------------------------------------------------------
    def others_best(self, state: MarketState) -> tuple[int | None, int | None]:
        """The best bid and ask of everyone but the bots (newcomers' orders), in ticks."""
        others = (
            Order.objects.filter(market=state.market, status__in=OPEN_STATUSES)
            .exclude(user_id__in=self.bot_ids)
            .exclude(price_ticks=None)
        )
        bid = others.filter(side="buy").aggregate(best=Max("price_ticks"))["best"]
        ask = others.filter(side="sell").aggregate(best=Min("price_ticks"))["best"]
        return bid, ask

    def windows(
        self, state: MarketState, other_bid: int | None, other_ask: int | None
    ) -> dict[str, list[int]]:
        """The prices the makers may quote now, best first: on each side ``WINDOW`` prices a
        tick apart from a tick off the fair price, inside the band and never crossing someone
        else's resting order (a post-only quote that would cross is refused: a maker never
        takes)."""
        fair = state.fair
        bids = [fair - 1 - level for level in range(WINDOW)]
        asks = [fair + 1 + level for level in range(WINDOW)]
        return {
            "buy": [t for t in bids if state.in_band(t) and (other_ask is None or t < other_ask)],
            "sell": [t for t in asks if state.in_band(t) and (other_bid is None or t > other_bid)],
        }

    def quote(
        self, state: MarketState, other_bid: int | None = None, other_ask: int | None = None
    ) -> None:
        """Keep ``LEVELS`` quotes on each side inside the window: cancel the quotes that left it
        (stale) or double a price, then fill the free prices nearest the fair price. Quotes
        still inside the window stay, so a one-tick move costs a cancel and an order per side,
        not a new ladder."""
        market = state.market
        windows = self.windows(state, other_bid, other_ask)
        resting = (
            Order.objects.filter(market=market, user__in=self.makers, status__in=OPEN_STATUSES)
            .exclude(price_ticks=None)
            .order_by("id")
            .values_list("id", "user_id", "side", "price_ticks")
        )
        users = {user.pk: user for user in self.makers}
        kept: set[tuple[str, int]] = set()
        # Cancels are journalled before the new quotes, so the runner removes a stale quote
        # before a new one could meet it.
        for order_id, user_id, side, ticks in resting:
            if ticks in windows[side] and (side, ticks) not in kept:
                kept.add((side, ticks))
                continue
            try:
                order_cancel(user=users[user_id], order_id=order_id)
                self.cancelled += 1
            except ExchangeError:  # filled or cancelled meanwhile
                pass
        missing: dict[int, list[OrderRequest]] = {}
        for side, prices in windows.items():
            free = [ticks for ticks in prices if (side, ticks) not in kept]
            wanted = LEVELS - (len(prices) - len(free))
            for ticks in free[: max(0, wanted)]:
                maker = self.makers[ticks % len(self.makers)]
                missing.setdefault(maker.pk, []).append(
                    order_request_parse(
                        market=market, side=side, type="limit", price=self.price(market, ticks),
                        quantity=self.quantity(market, MAKER_SIZES_MTOK), time_in_force="GTC",
                        post_only=True,
                    )
                )  # fmt: skip
        for user_id, requests in missing.items():
            for outcome in order_place_many(user=users[user_id], requests=requests):
                if isinstance(outcome, InsufficientFunds):
                    raise outcome
                if isinstance(outcome, Exception):
                    self.failures += 1
                    logger.debug("demo quote refused: %s", outcome)
                else:
                    self.placed += 1

    # -- takers -------------------------------------------------------------------------------
    def take(
        self, state: MarketState, other_bid: int | None = None, other_ask: int | None = None
    ) -> None:
        """One small IOC order across the spread; only when the best opposite price is inside
        the band, and with a limit inside it, so every trade it makes is in the band. A
        newcomer's order at the top of the book is taken first (as an arbitrageur would: an
        order near the mid fills within seconds); otherwise the side leans towards the fair
        price."""
        market = state.market
        engine = engine_state_get(market=market)
        if engine is None:
            return
        last = engine.last_trade_ticks or state.fair
        # percent points of lean towards the side that moves the last price to the fair price
        lean = max(-30, min(30, (state.fair - last) * 2000 // max(state.fair, 1)))
        side = "buy" if self.random.randrange(100) < 50 + lean else "sell"
        if other_bid is not None and other_bid == engine.best_bid_ticks:
            side = "sell"
        elif other_ask is not None and other_ask == engine.best_ask_ticks:
            side = "buy"
        if side == "buy":
            best = engine.best_ask_ticks
            if best is None or not state.in_band(best):
                return
            ticks = min(best + TAKER_SLACK_TICKS, state.high_ticks)
            user = self.random.choice(self.buyers)
        else:
            best = engine.best_bid_ticks
            if best is None or not state.in_band(best):
                return
            ticks = max(best - TAKER_SLACK_TICKS, state.low_ticks)
            user = self.random.choice(self.sellers)
        request = order_request_parse(
            market=market, side=side, type="limit", price=self.price(market, ticks),
            quantity=self.quantity(market, TAKER_SIZES_MTOK), time_in_force="IOC",
        )  # fmt: skip
        order_place(user=user, request=request)
        self.placed += 1

    # -- the loop -----------------------------------------------------------------------------
    def step(self, state: MarketState | None = None) -> None:
        """One round on one market (a random one unless given): move the fair price, most of
        the time let a taker trade, then refresh the makers' quotes (last, so that the book is
        full again until the next round)."""
        state = state or self.random.choice(self.markets)
        state.process.step()
        try:
            other_bid, other_ask = self.others_best(state)
            if self.random.random() < 0.7 or other_bid is not None or other_ask is not None:
                self.take(state, other_bid, other_ask)
            self.quote(state, *self.others_best(state))
        except InsufficientFunds:
            self.top_up()
        except ExchangeError as error:
            self.failures += 1
            logger.debug("demo bot order refused: %s", error)

    def top_up(self) -> None:
        from exchange.demo.seed import demo_seed

        demo_seed()

    def run(self, *, stop: threading.Event, duration: float | None = None) -> None:
        """Steps at ``rate`` per second (random gaps) until ``stop`` is set or ``duration``
        seconds have passed."""
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
        from exchange.demo.history import history_seed

        try:
            seeded = history_seed()
            if seeded:
                logger.info("demo: seeded 24 h of simulated candles for %s", ", ".join(seeded))
            simulator = Simulator(bots=settings.DEMO_BOTS, rate=settings.DEMO_RATE)
        except Exception:
            logger.exception("the demo could not start (are the database and markets ready?)")
            return
        logger.info(
            "demo simulator: %s bots, %.1f rounds/s on %s markets",
            len(simulator.bots), simulator.rate, len(simulator.markets),
        )  # fmt: skip
        simulator.run(stop=_stop)

    _thread = threading.Thread(target=run, name="demo-simulator", daemon=True)
    _thread.start()


def demo_stop() -> None:
    _stop.set()
