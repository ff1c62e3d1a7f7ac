"""End to end through the REST API, with the runner processing in-process (inline)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from exchange.delivery.escrow.models import Lot
from exchange.delivery.escrow.services import lots_expire_due
from exchange.ledger.models import Account, LedgerTransaction, SystemAccount
from exchange.markets.models import MarketStatus
from exchange.runner.embedded import inline_process
from exchange.runner.loop import expire_due_orders
from orders.models import Order, OrderCommand, Trade
from tests.orders.conftest import CNY, SYMBOL, balance, place

pytestmark = pytest.mark.django_db


def escrow_balance(currency: str) -> int:
    account = Account.objects.filter(system=SystemAccount.ESCROW, asset_id=currency).first()
    return account.available if account else 0


def test_limit_orders_cross_at_the_makers_price_with_fees_in_the_ledger(
    market, trader, fund
) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=5_000_000, market=market)
    fund(buyer.user, cny=100)

    ask = place(seller, side="sell", price="8.00", quantity="2")
    assert ask["status"] == "open"
    assert balance(seller.user, SYMBOL) == (3_000_000, 2_000_000)

    bid = place(buyer, side="buy", price="8.10", quantity="1.5", client_order_id="b-1")
    assert bid["status"] == "filled"
    assert bid["filled_quantity"] == "1.5"
    assert bid["remaining_quantity"] == "0"
    assert bid["average_price"] == "8"
    assert bid["cost"] == "12"
    assert bid["fee"] == "0.024"  # taker 0.2% of 12 CNY
    assert [f["liquidity"] for f in bid["fills"]] == ["taker"]
    assert bid["fills"][0]["price"] == "8"

    # buyer: 100 - 12 - 0.024, the unused part of the hold (priced at 8.10) released
    assert balance(buyer.user, "CNY") == (8_797_600_000, 0)
    assert balance(buyer.user, SYMBOL) == (1_500_000, 0)
    # seller: a primary sale in a deliverable market pays escrow, not the seller (yet); 0.5 MTok
    # still held by the resting ask
    assert balance(seller.user, "CNY") == (0, 0)
    assert escrow_balance("CNY") == 12 * CNY
    assert balance(seller.user, SYMBOL) == (3_000_000, 500_000)

    ask_now = seller.get(f"/api/v1/orders/{ask['id']}").json()
    assert ask_now["status"] == "partially_filled"
    assert ask_now["filled_quantity"] == "1.5"
    assert ask_now["fee"] == "0"  # the seller fee is taken when escrow is released
    assert ask_now["fills"][0]["liquidity"] == "maker"

    trade = Trade.objects.get()
    assert (trade.notional, trade.buyer_fee, trade.seller_fee) == (12 * CNY, 2_400_000, 0)
    lot = Lot.objects.get()
    assert (lot.holder_id, lot.provider_id, lot.bought_tokens, lot.escrow_units) == (
        buyer.user.id, seller.user.id, 1_500_000, 12 * CNY
    )  # fmt: skip
    assert lot.seller_fee_rate == Decimal("0.001")  # the maker rate
    # take-or-pay: once the lot expires unconsumed, the seller gets 12 − 0.012 maker fee
    lots_expire_due(now=lot.expires_at + timedelta(seconds=1))
    assert balance(seller.user, "CNY") == (1_198_800_000, 0)
    assert escrow_balance("CNY") == 0


def test_price_time_priority_and_partial_fills_across_levels(market, trader, fund) -> None:
    first, second, better, buyer = trader(), trader(), trader(), trader()
    for client in (first, second, better):
        fund(client.user, tokens=1_000_000, market=market)
    fund(buyer.user, cny=100)
    a1 = place(first, side="sell", price="8.05", quantity="1")
    a2 = place(second, side="sell", price="8.05", quantity="1")
    a3 = place(better, side="sell", price="8.01", quantity="0.5")
    bid = place(buyer, side="buy", price="8.05", quantity="2", time_in_force="IOC")
    assert [(f["order_id"], f["price"], f["quantity"]) for f in bid["fills"]] == [
        (bid["id"], "8.01", "0.5"),
        (bid["id"], "8.05", "1"),
        (bid["id"], "8.05", "0.5"),
    ]
    assert bid["status"] == "filled"
    statuses = {o.id: o.status for o in Order.objects.filter(id__in=[a1["id"], a2["id"], a3["id"]])}
    assert statuses == {a1["id"]: "filled", a2["id"]: "partially_filled", a3["id"]: "filled"}


def test_ioc_remainder_is_cancelled_and_its_hold_released(market, trader, fund) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=1_000_000, market=market)
    fund(buyer.user, cny=50)
    place(seller, side="sell", price="8.00", quantity="0.4")
    bid = place(buyer, side="buy", price="8.00", quantity="1", time_in_force="IOC")
    assert bid["status"] == "cancelled"
    assert bid["cancel_reason"] == "ioc"
    assert bid["filled_quantity"] == "0.4"
    # 0.4 MTok × 8 = 3.2 CNY + 0.0064 taker fee
    assert balance(buyer.user, "CNY") == (50 * CNY - 320_000_000 - 640_000, 0)


def test_fok_that_cannot_fill_does_nothing(market, trader, fund) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=1_000_000, market=market)
    fund(buyer.user, cny=50)
    ask = place(seller, side="sell", price="8.00", quantity="0.4")
    bid = place(buyer, side="buy", price="8.00", quantity="1", time_in_force="FOK")
    assert (bid["status"], bid["cancel_reason"], bid["filled_quantity"]) == (
        "cancelled",
        "fok",
        "0",
    )
    assert Trade.objects.count() == 0
    assert Order.objects.get(id=ask["id"]).status == "open"
    assert balance(buyer.user, "CNY") == (50 * CNY, 0)


def test_post_only_that_would_cross_is_cancelled(market, trader, fund) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=1_000_000, market=market)
    fund(buyer.user, cny=50)
    place(seller, side="sell", price="8.00", quantity="0.4")
    crossing = place(buyer, side="buy", price="8.00", quantity="0.1", post_only=True)
    assert (crossing["status"], crossing["cancel_reason"]) == ("cancelled", "post_only")
    passive = place(buyer, side="buy", price="7.99", quantity="0.1", post_only=True)
    assert passive["status"] == "open"


def test_market_buy_is_protected_by_the_band_and_releases_unused_hold(market, trader, fund) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=2_000_000, market=market)
    fund(buyer.user, cny=100)
    place(seller, side="sell", price="8.00", quantity="1")
    place(seller, side="sell", price="9.00", quantity="1")  # beyond the 10% band from 8.00
    bought = place(buyer, side="buy", type="market", quantity="2")
    assert bought["protection_price"] == "8.8"
    assert bought["status"] == "cancelled"
    assert bought["cancel_reason"] == "ioc"
    assert bought["filled_quantity"] == "1"
    assert balance(buyer.user, "CNY") == (100 * CNY - 8 * CNY - 1_600_000, 0)


def test_market_order_without_liquidity_is_refused(market, trader, fund) -> None:
    buyer = trader()
    fund(buyer.user, cny=10)
    response = buyer.post(
        "/api/v1/orders",
        {"market": SYMBOL, "side": "buy", "type": "market", "quantity": "1"},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "no_liquidity"
    assert Order.objects.count() == 0


def test_gtd_order_is_expired_by_the_runner(market, trader, fund) -> None:
    buyer = trader()
    fund(buyer.user, cny=10)
    expires = timezone.now() + timedelta(minutes=5)
    bid = place(
        buyer,
        side="buy",
        price="7.00",
        quantity="1",
        time_in_force="GTD",
        expire_time=expires.isoformat(),
    )
    assert bid["status"] == "open"
    Order.objects.filter(id=bid["id"]).update(expire_time=timezone.now() - timedelta(seconds=1))
    assert expire_due_orders(market=market) == 1
    assert expire_due_orders(market=market) == 0  # journalled once
    inline_process(market)
    order = buyer.get(f"/api/v1/orders/{bid['id']}").json()
    assert (order["status"], order["cancel_reason"]) == ("cancelled", "expired")
    assert balance(buyer.user, "CNY") == (10 * CNY, 0)


def test_cancel_and_cancel_all_release_holds(market, trader, fund) -> None:
    buyer = trader()
    fund(buyer.user, cny=100)
    ids = [place(buyer, side="buy", price=f"7.0{i}", quantity="1")["id"] for i in range(3)]
    assert balance(buyer.user, "CNY")[1] > 0
    cancelled = buyer.delete(f"/api/v1/orders/{ids[0]}").json()
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "user")
    again = buyer.delete(f"/api/v1/orders/{ids[0]}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "order_not_open"
    response = buyer.delete(f"/api/v1/orders?market={SYMBOL}")
    assert sorted(response.json()["cancel_requested"]) == sorted(ids[1:])
    # the answer is the cancelled orders themselves, as they are now
    assert [(o["id"], o["status"]) for o in response.json()["orders"]] == [
        (ids[1], "cancelled"), (ids[2], "cancelled"),
    ]  # fmt: skip
    assert balance(buyer.user, "CNY") == (100 * CNY, 0)
    assert buyer.get("/api/v1/orders?status=open").json()["results"] == []
    assert len(buyer.get("/api/v1/orders?status=closed").json()["results"]) == 3


@pytest.mark.parametrize(
    ("stp", "resting_left", "taker_status", "taker_reason"),
    [
        ("cancel_oldest", False, "open", None),
        ("cancel_newest", True, "cancelled", "stp"),
        ("cancel_both", False, "cancelled", "stp"),
    ],
)
def test_self_trade_prevention(
    market, trader, fund, stp, resting_left, taker_status, taker_reason
) -> None:
    both = trader()
    fund(both.user, cny=100, tokens=1_000_000, market=market)
    ask = place(both, side="sell", price="8.00", quantity="1")
    bid = place(both, side="buy", price="8.00", quantity="1", stp=stp)
    assert Trade.objects.count() == 0
    assert (bid["status"], bid["cancel_reason"]) == (taker_status, taker_reason)
    resting = Order.objects.get(id=ask["id"])
    assert (resting.status == "open") is resting_left
    if not resting_left:
        assert resting.cancel_reason == "stp"


def test_client_order_id_is_idempotent(market, trader, fund) -> None:
    buyer = trader()
    fund(buyer.user, cny=100)
    body = {
        "market": SYMBOL,
        "side": "buy",
        "price": "7.00",
        "quantity": "1",
        "client_order_id": "retry-me",
    }
    first = buyer.post("/api/v1/orders", body, format="json")
    assert first.status_code == 201
    held = balance(buyer.user, "CNY")
    transactions = LedgerTransaction.objects.count()
    second = buyer.post("/api/v1/orders", body, format="json")
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert balance(buyer.user, "CNY") == held
    assert LedgerTransaction.objects.count() == transactions
    conflict = buyer.post("/api/v1/orders", {**body, "price": "7.01"}, format="json")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "duplicate_client_order_id"
    found = buyer.get("/api/v1/orders?client_order_id=retry-me").json()["results"]
    assert [o["id"] for o in found] == [first.json()["id"]]
    assert Order.objects.count() == 1


def test_insufficient_funds_writes_nothing(market, trader, fund) -> None:
    buyer = trader()
    fund(buyer.user, cny=1)
    transactions = LedgerTransaction.objects.count()
    response = buyer.post(
        "/api/v1/orders",
        {"market": SYMBOL, "side": "buy", "price": "8.00", "quantity": "1"},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "insufficient_funds"
    assert Order.objects.count() == 0
    assert OrderCommand.objects.count() == 0
    assert LedgerTransaction.objects.count() == transactions
    assert balance(buyer.user, "CNY") == (CNY, 0)
    seller = trader()
    response = seller.post(
        "/api/v1/orders",
        {"market": SYMBOL, "side": "sell", "price": "8.00", "quantity": "1"},
        format="json",
    )
    assert response.json()["error"]["code"] == "insufficient_funds"


def test_halted_market_refuses_new_orders_but_accepts_cancels(market, trader, fund) -> None:
    buyer = trader()
    fund(buyer.user, cny=100)
    bid = place(buyer, side="buy", price="7.00", quantity="1")
    market.status = MarketStatus.HALTED
    market.save()
    response = buyer.post(
        "/api/v1/orders",
        {"market": SYMBOL, "side": "buy", "price": "7.00", "quantity": "1"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "market_halted"
    assert buyer.delete(f"/api/v1/orders/{bid['id']}").json()["status"] == "cancelled"


def test_another_users_order_is_not_found(market, trader, fund) -> None:
    owner, other = trader(), trader()
    fund(owner.user, cny=100)
    bid = place(owner, side="buy", price="7.00", quantity="1")
    assert other.get(f"/api/v1/orders/{bid['id']}").status_code == 404
    assert other.delete(f"/api/v1/orders/{bid['id']}").status_code == 404
    assert other.get("/api/v1/orders").json()["results"] == []
    assert Order.objects.get(id=bid["id"]).status == "open"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price": "8.005", "quantity": "1"}, "price"),
        ({"price": "8.00", "quantity": "1.0005"}, "quantity"),
        ({"price": "8.00", "quantity": "0.001"}, "quantity"),  # below the 0.01 minimum
        ({"price": "-1", "quantity": "1"}, "price"),
        ({"price": 8.0, "quantity": "1"}, "price"),  # floats are refused
        ({"price": "abc", "quantity": "1"}, "price"),
    ],
)
def test_bad_prices_and_quantities_are_refused(market, trader, fund, body, field) -> None:
    buyer = trader()
    fund(buyer.user, cny=100)
    response = buyer.post(
        "/api/v1/orders", {"market": SYMBOL, "side": "buy", **body}, format="json"
    )
    assert response.status_code == 400
    assert (
        field in str(response.json()["error"]["details"])
        or field in response.json()["error"]["message"]
    )
    assert Order.objects.count() == 0


def test_read_only_key_cannot_trade(market, trader, fund) -> None:
    reader = trader(scopes=("read",))
    response = reader.post(
        "/api/v1/orders",
        {"market": SYMBOL, "side": "buy", "price": "7", "quantity": "1"},
        format="json",
    )
    assert response.status_code == 403
    assert reader.get("/api/v1/orders").status_code == 200


def test_batch_answers_each_order_on_its_own(market, trader, fund) -> None:
    buyer = trader()
    fund(buyer.user, cny=20)
    response = buyer.post(
        "/api/v1/orders/batch",
        {
            "orders": [
                {"market": SYMBOL, "side": "buy", "price": "7.00", "quantity": "1"},
                {"market": SYMBOL, "side": "buy", "price": "7.001", "quantity": "1"},
                {"market": SYMBOL, "side": "buy", "price": "7.00", "quantity": "100"},
                {"market": "NOPE", "side": "buy", "price": "7.00", "quantity": "1"},
            ]
        },
        format="json",
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 422, 404]
    assert results[0]["order"]["status"] == "open"
    assert results[2]["error"]["code"] == "insufficient_funds"
    too_many = buyer.post("/api/v1/orders/batch", {"orders": [{}] * 51}, format="json")
    assert too_many.status_code == 400
    assert Order.objects.count() == 1


def test_fills_endpoint_lists_my_trades(market, trader, fund) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=1_000_000, market=market)
    fund(buyer.user, cny=100)
    place(seller, side="sell", price="8.00", quantity="1")
    place(buyer, side="buy", price="8.00", quantity="0.25")
    fills = buyer.get("/api/v1/fills").json()["results"]
    assert len(fills) == 1
    assert fills[0] | {} == fills[0]
    assert (fills[0]["side"], fills[0]["liquidity"], fills[0]["quantity"], fills[0]["tokens"]) == (
        "buy",
        "taker",
        "0.25",
        250_000,
    )
    assert fills[0]["fee"] == "0.004"
    seller_fill = seller.get("/api/v1/fills").json()["results"][0]
    # a primary sale: the seller's fee is taken from escrow as it is released, not at the fill
    assert (seller_fill["side"], seller_fill["liquidity"], seller_fill["fee"]) == (
        "sell",
        "maker",
        "0",
    )


def test_rebuilt_runner_continues_as_if_never_stopped(market, trader, fund) -> None:
    from exchange.runner import embedded

    seller, buyer = trader(), trader()
    fund(seller.user, tokens=3_000_000, market=market)
    fund(buyer.user, cny=100)
    place(seller, side="sell", price="8.02", quantity="1")
    place(seller, side="sell", price="8.01", quantity="1")
    place(seller, side="sell", price="8.01", quantity="1")
    embedded.inline_reset()  # the process "died": the next step rebuilds from the database
    bid = place(buyer, side="buy", price="8.02", quantity="2.5")
    assert [(f["price"], f["quantity"]) for f in bid["fills"]] == [
        ("8.01", "1"),
        ("8.01", "1"),
        ("8.02", "0.5"),
    ]


def test_journal_replays_to_the_same_trades(market, trader, fund) -> None:
    import json
    from io import StringIO

    from django.core.management import call_command

    from exchange.engine import Book

    seller, buyer = trader(), trader()
    fund(seller.user, tokens=5_000_000, market=market)
    fund(buyer.user, cny=200)
    for price in ("8.00", "8.01", "8.02"):
        place(seller, side="sell", price=price, quantity="1")
    cancel_me = place(buyer, side="buy", price="7.00", quantity="1")
    buyer.delete(f"/api/v1/orders/{cancel_me['id']}")
    place(buyer, side="buy", price="8.01", quantity="1.5")
    place(buyer, side="buy", type="market", quantity="0.5")
    out = StringIO()
    call_command("export_journal", SYMBOL, stdout=out)
    book = Book()
    replayed = [
        event[1:5]
        for line in out.getvalue().splitlines()
        for event in book.apply(json.loads(line))
        if event[0] == "trade"
    ]
    stored = list(
        Trade.objects.order_by("seq", "match_index").values_list(
            "taker_order_id", "maker_order_id", "price_ticks", "quantity_lots"
        )
    )
    assert replayed == stored
    assert len(stored) == 3


def test_batch_of_covered_orders_is_placed_together_and_replays_by_client_id(
    market, trader, fund
) -> None:
    buyer = trader()
    fund(buyer.user, cny=100)
    body = {
        "orders": [
            {"market": SYMBOL, "side": "buy", "price": f"7.0{i}", "quantity": "1",
             "client_order_id": f"batch-{i}"}
            for i in range(5)
        ]
    }  # fmt: skip
    first = buyer.post("/api/v1/orders/batch", body, format="json").json()["results"]
    assert [r["status"] for r in first] == [201] * 5
    assert [r["order"]["status"] for r in first] == ["open"] * 5
    assert [r["order"]["price"] for r in first] == ["7", "7.01", "7.02", "7.03", "7.04"]
    held = balance(buyer.user, "CNY")[1]
    again = buyer.post("/api/v1/orders/batch", body, format="json").json()["results"]
    assert [r["status"] for r in again] == [200] * 5
    assert [r["order"]["id"] for r in again] == [r["order"]["id"] for r in first]
    assert balance(buyer.user, "CNY")[1] == held
    assert Order.objects.count() == 5


def test_fee_rates_changed_on_a_live_market_apply_to_new_orders_only(market, trader, fund) -> None:
    seller, buyer = trader(), trader()
    fund(seller.user, tokens=1_000_000, market=market)
    fund(buyer.user, cny=100)
    bid = place(buyer, side="buy", price="8.00", quantity="1")  # held with the 0.2% rate
    market.maker_fee_rate = Decimal("0.005")  # staff raise the fees above what was held
    market.taker_fee_rate = Decimal("0.006")
    market.save()
    ask = place(seller, side="sell", price="8.00", quantity="1")
    assert ask["status"] == "filled"
    assert buyer.get(f"/api/v1/orders/{bid['id']}").json()["fee"] == "0.008"  # its own 0.1%
    assert ask["fee"] == "0"  # a primary sale: taken from escrow when released
    assert Lot.objects.get().seller_fee_rate == Decimal("0.006")  # the new taker rate
    assert balance(buyer.user, "CNY") == (100 * CNY - 8 * CNY - 800_000, 0)
    lots_expire_due(now=timezone.now() + timedelta(days=31))
    assert balance(seller.user, "CNY") == (8 * CNY - 4_800_000, 0)  # 0.6% of 8


def test_absurd_prices_are_refused_not_500(market, trader, fund) -> None:
    buyer = trader()
    fund(buyer.user, cny=100)
    for price in ("1e30", "99999999999999999999.99", "8.00000000000000000000000000001"):
        response = buyer.post(
            "/api/v1/orders",
            {"market": SYMBOL, "side": "buy", "price": price, "quantity": "1"},
            format="json",
        )
        assert response.status_code == 400, price
    assert Order.objects.count() == 0


def test_an_order_accepted_before_a_halt_is_not_matched_after_it(
    market, trader, fund, settings
) -> None:
    from io import StringIO

    from django.core.management import call_command

    seller, buyer = trader(), trader()
    fund(seller.user, tokens=1_000_000, market=market)
    fund(buyer.user, cny=100)
    place(seller, side="sell", price="8.00", quantity="1")
    settings.ENGINE_RUNNER = "external"  # journalled, not yet matched
    settings.ORDER_WAIT_SECONDS = 0
    bid = place(buyer, side="buy", price="8.00", quantity="1")
    assert bid["status"] == "pending"
    market.status = MarketStatus.HALTED
    market.save()
    inline_process(market)
    order = Order.objects.get(id=bid["id"])
    assert (order.status, order.cancel_reason, order.filled_lots) == (
        "cancelled", "market_halted", 0,
    )  # fmt: skip
    assert Trade.objects.count() == 0
    assert balance(buyer.user, "CNY") == (100 * CNY, 0)
    out = StringIO()
    call_command("export_journal", SYMBOL, stdout=out)
    assert f'"id":{bid["id"]}' not in out.getvalue()
