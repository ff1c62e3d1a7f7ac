"""The demo's bots against the real order services and the inline runner: depth on both sides
near the mid, no bot trade outside the price band, a stray order rests, a sane one fills."""

from __future__ import annotations

import pytest
from django.db.models import Q

from exchange.demo.seed import demo_staff_get
from exchange.demo.simulator import WINDOW, Simulator
from exchange.ledger import services as ledger
from exchange.ledger.selectors import audit_run
from exchange.markets.models import Market, MarketStatus
from orders.models import OPEN_STATUSES, Order, OrderStatus, Trade
from orders.selectors import engine_state_get
from orders.services import order_place, order_request_parse

pytestmark = pytest.mark.django_db

CNY = 10**8
# the cheapest and dearest references in ticks (200 to 1,600), and a USD market
SYMBOLS = [
    "QWEN3.6-PLUS-IN-CNY",
    "QWEN3.6-PLUS-OUT-CNY",
    "KIMI-K2-OUT-CNY",
    "LLAMA-4-MAVERICK-IN-USD",
]


def rounds(simulator: Simulator, count: int) -> None:
    for _ in range(count):
        for state in simulator.markets:
            simulator.step(state)


def levels(market: Market, side: str) -> list[int]:
    prices = (
        Order.objects.filter(market=market, side=side, status__in=OPEN_STATUSES)
        .values_list("price_ticks", flat=True)
        .distinct()
    )
    return sorted(prices, reverse=side == "buy")


@pytest.fixture
def simulator(markets: list[Market]) -> Simulator:
    # the other markets closed: the demo seeds capacity only where it trades (seconds saved)
    Market.objects.exclude(symbol__in=SYMBOLS).update(status=MarketStatus.CLOSED)
    simulator = Simulator(bots=6, rate=1.0, seed=7, symbols=SYMBOLS)
    rounds(simulator, 6)
    return simulator


@pytest.fixture
def newcomer(make_user):
    user = make_user(role="buyer")
    ledger.adjustment_post(
        user=user, asset="CNY", amount=10_000 * CNY, reason="test funds",
        staff_user=demo_staff_get(), idempotency_key=f"test:{user.pk}",
    )  # fmt: skip
    return user


def test_both_sides_stay_five_levels_deep_near_the_mid(simulator: Simulator) -> None:
    assert sorted(state.market.symbol for state in simulator.markets) == sorted(SYMBOLS)
    for state in simulator.markets:
        engine = engine_state_get(market=state.market)
        assert engine is not None
        assert engine.best_bid_ticks
        assert engine.best_ask_ticks
        mid2 = engine.best_bid_ticks + engine.best_ask_ticks  # twice the mid, in ticks
        bids = [p for p in levels(state.market, "buy") if mid2 - 2 * p <= 2 * (WINDOW + 2)]
        asks = [p for p in levels(state.market, "sell") if 2 * p - mid2 <= 2 * (WINDOW + 2)]
        assert len(bids) >= 5, (state.market.symbol, bids)
        assert len(asks) >= 5, (state.market.symbol, asks)
        assert engine.best_bid_ticks < engine.best_ask_ticks
    assert Trade.objects.exists()  # takers trade against the quotes


def test_no_bot_order_or_trade_leaves_the_band(simulator: Simulator) -> None:
    rounds(simulator, 10)
    for state in simulator.markets:
        prices = Order.objects.filter(market=state.market, user_id__in=simulator.bot_ids)
        outside = prices.filter(
            Q(price_ticks__lt=state.low_ticks) | Q(price_ticks__gt=state.high_ticks)
        )
        assert not outside.exists()
        trades = Trade.objects.filter(market=state.market)
        assert trades.exists()
        assert not trades.filter(
            Q(price_ticks__lt=state.low_ticks) | Q(price_ticks__gt=state.high_ticks)
        ).exists()
    assert audit_run().is_ok


def test_a_stray_buy_far_below_the_band_rests(simulator: Simulator, newcomer) -> None:
    state = next(s for s in simulator.markets if s.market.symbol == "QWEN3.6-PLUS-OUT-CNY")
    silly = state.low_ticks // 2  # 4.00 where the reference is 8.00
    request = order_request_parse(
        market=state.market, side="buy", type="limit", price=simulator.price(state.market, silly),
        quantity="1", time_in_force="GTC",
    )  # fmt: skip
    order, _created = order_place(user=newcomer, request=request)
    for _ in range(30):
        simulator.step(state)
    order.refresh_from_db()
    assert (order.status, order.filled_lots) == (OrderStatus.OPEN, 0)
    # and the makers keep quoting their own bids above it, inside the band
    assert levels(state.market, "buy")[0] >= state.low_ticks


def test_a_buy_at_the_mid_fills_within_a_few_rounds(simulator: Simulator, newcomer) -> None:
    state = next(s for s in simulator.markets if s.market.symbol == "QWEN3.6-PLUS-OUT-CNY")
    engine = engine_state_get(market=state.market)
    assert engine is not None
    mid = (engine.best_bid_ticks + engine.best_ask_ticks) // 2
    request = order_request_parse(
        market=state.market, side="buy", type="limit", price=simulator.price(state.market, mid),
        quantity="0.5", time_in_force="GTC",
    )  # fmt: skip
    order, _created = order_place(user=newcomer, request=request)
    for _ in range(30):
        simulator.step(state)
        order.refresh_from_db()
        if order.status == OrderStatus.FILLED:
            break
    assert order.status == OrderStatus.FILLED
    trades = Trade.objects.filter(Q(taker_order=order) | Q(maker_order=order))
    assert {t.price_ticks for t in trades} <= set(range(state.low_ticks, state.high_ticks + 1))


def test_takers_do_not_sell_into_a_stray_bid_even_when_it_is_the_only_one(
    markets: list[Market], newcomer
) -> None:
    # No maker quotes at all: the stray bid is the best bid, which the old takers sold into.
    simulator = Simulator(bots=6, rate=1.0, seed=3, symbols=["QWEN3.6-PLUS-OUT-CNY"])
    state = simulator.markets[0]
    request = order_request_parse(
        market=state.market, side="buy", type="limit",
        price=simulator.price(state.market, state.low_ticks - 1), quantity="1",
        time_in_force="GTC",
    )  # fmt: skip
    order, _created = order_place(user=newcomer, request=request)
    for _ in range(20):
        simulator.take(state)
    order.refresh_from_db()
    assert (order.status, order.filled_lots) == (OrderStatus.OPEN, 0)
    assert not Trade.objects.filter(market=state.market).exists()
