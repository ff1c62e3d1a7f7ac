"""The shipped ccxt exchange class (clients/ccxt) against a live served exchange: every unified
method, and errors raised as the ccxt exception their code maps to."""

from __future__ import annotations

import importlib

import ccxt
import pytest
from tokenexchange_ccxt import ERROR_CODES, tokenexchange

from accounts.services import api_key_create
from exchange.api_errors import _DRF_CODES
from exchange.delivery.endpoints.models import Endpoint
from exchange.errors import ExchangeError
from tests.asgi_server import asgi_server
from tests.delivery.endpoints.helpers import live_endpoint
from tests.orders.conftest import SYMBOL

ERROR_MODULES = (
    "accounts.funding.services", "accounts.onboarding", "accounts.services",
    "exchange.delivery.endpoints.errors", "exchange.delivery.escrow.services",
    "exchange.demo.funds", "orders.capacity",
)  # fmt: skip

pytestmark = pytest.mark.django_db(transaction=True)

UNIFIED = "QWEN3.6-PLUS-OUT/CNY"


@pytest.fixture
def server(postgres, redis_url):
    with asgi_server() as running:
        yield running


def client(base: str, key: str | None = None) -> tokenexchange:
    config = {"urls": {"api": {"rest": base + "/api/v1"}}, "timeout": 30_000}
    if key:
        config["apiKey"] = key
    return tokenexchange(config)


def _codes(klass: type[ExchangeError]) -> set[str]:
    found = {klass.code}
    for sub in klass.__subclasses__():
        found |= _codes(sub)
    return found


def test_every_error_code_of_the_api_maps_to_a_ccxt_exception() -> None:
    for module in ERROR_MODULES:  # every error class defined
        importlib.import_module(module)

    codes = _codes(ExchangeError) | set(_DRF_CODES.values())
    codes |= {"server_error", "service_unavailable", "unavailable", "malformed_request"}
    assert codes - set(ERROR_CODES) == set()
    assert all(issubclass(error, ccxt.BaseError) for error in ERROR_CODES.values())


def test_unified_methods_against_a_live_exchange(server, market, make_user, fund) -> None:
    base, _ = server
    seller, buyer = make_user(), make_user()
    fund(seller, tokens=10_000_000, market=market)
    if not Endpoint.objects.filter(provider=seller, market=market).exists():
        live_endpoint(seller, market)  # a provider's asks need an endpoint that can deliver
    fund(buyer, cny=1000)
    sells = client(base, api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret)
    buys = client(base, api_key_create(user=buyer, name="b", scopes=["read", "trade"]).secret)
    public = client(base)

    markets = public.load_markets()
    assert markets[UNIFIED]["id"] == SYMBOL
    assert (markets[UNIFIED]["base"], markets[UNIFIED]["quote"]) == ("QWEN3.6-PLUS-OUT", "CNY")
    assert markets[UNIFIED]["precision"]["price"] == 0.01

    # createOrder(s): two asks, one by a client order id
    ask = sells.create_order(UNIFIED, "limit", "sell", 2, 8.1, {"clientOrderId": "ask-1"})
    assert (ask["status"], ask["clientOrderId"], ask["amount"]) == ("open", "ask-1", 2.0)
    batch = sells.create_orders(
        [
            {"symbol": UNIFIED, "type": "limit", "side": "sell", "amount": 1, "price": 8.5},
            {"symbol": UNIFIED, "type": "limit", "side": "sell", "amount": 1, "price": 8.6,
             "params": {"clientOrderId": "ask-3"}},
        ]
    )  # fmt: skip
    assert [order["status"] for order in batch] == ["open", "open"]

    # a buy that trades 1.5 at the maker's 8.10
    bought = buys.create_order(UNIFIED, "limit", "buy", 1.5, 8.2)
    assert (bought["status"], bought["filled"], bought["average"]) == ("closed", 1.5, 8.1)
    assert bought["trades"][0]["takerOrMaker"] == "taker"

    # market data
    ticker = public.fetch_ticker(UNIFIED)
    assert (ticker["last"], ticker["ask"]) == (8.1, 8.1)
    assert isinstance(ticker["timestamp"], int)
    assert UNIFIED in public.fetch_tickers()
    book = public.fetch_order_book(UNIFIED)
    assert book["asks"][0][:2] == [8.1, 0.5]
    assert isinstance(book["timestamp"], int)
    trades = public.fetch_trades(UNIFIED)
    assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(8.1, 1.5, "buy")]
    since = trades[0]["timestamp"]
    assert public.fetch_trades(UNIFIED, since=since + 1) == []
    assert len(public.fetch_trades(UNIFIED, since=since)) == 1
    candles = public.fetch_ohlcv(UNIFIED, "1m", since=since - 60_000)
    assert candles[-1][1:] == [8.1, 8.1, 8.1, 8.1, 1.5]
    assert candles[-1][0] == since // 60_000 * 60_000

    # account
    balance = buys.fetch_balance()
    assert balance["QWEN3.6-PLUS-OUT"]["total"] == 1.5
    assert balance["CNY"]["total"] < 1000
    mine = buys.fetch_my_trades(UNIFIED)
    assert [(t["order"], t["amount"], t["takerOrMaker"]) for t in mine] == [
        (bought["id"], 1.5, "taker")
    ]
    assert buys.fetch_my_trades(UNIFIED, since=mine[0]["timestamp"] + 1) == []

    # orders: fetch, open, closed, cancel by id and by client order id, cancel all
    assert sells.fetch_order(ask["id"])["filled"] == 1.5
    assert {o["id"] for o in sells.fetch_open_orders(UNIFIED)} == {
        ask["id"],
        *[o["id"] for o in batch],
    }
    assert [o["id"] for o in buys.fetch_closed_orders(UNIFIED)] == [bought["id"]]
    cancelled = sells.cancel_order(batch[0]["id"], UNIFIED)
    assert cancelled["status"] == "canceled"
    by_client = sells.cancel_order(None, UNIFIED, {"clientOrderId": "ask-3"})
    assert (by_client["status"], by_client["id"]) == ("canceled", batch[1]["id"])
    everything = sells.cancel_all_orders(UNIFIED)
    assert [(o["id"], o["status"]) for o in everything] == [(ask["id"], "canceled")]
    assert sells.fetch_open_orders(UNIFIED) == []

    # errors: the body's code picks the exception
    with pytest.raises(ccxt.OrderNotFound):
        sells.cancel_order(ask["id"], UNIFIED)  # already cancelled: order_not_open
    with pytest.raises(ccxt.OrderNotFound):
        sells.fetch_order("999999999")
    with pytest.raises(ccxt.OrderNotFound):
        sells.cancel_order(None, UNIFIED, {"clientOrderId": "never-sent"})
    with pytest.raises(ccxt.InsufficientFunds):
        buys.create_order(UNIFIED, "limit", "buy", 1000, 8)
    with pytest.raises(ccxt.DuplicateOrderId):
        sells.create_order(UNIFIED, "limit", "sell", 1, 9, {"clientOrderId": "ask-1"})
    with pytest.raises(ccxt.BadSymbol):
        public.request("markets/{symbol}/ticker", "public", "GET", {"symbol": "NOPE-CNY"})
    with pytest.raises(ccxt.BadRequest):
        public.fetch_trades(UNIFIED, params={"limit": 0})
    with pytest.raises(ccxt.AuthenticationError):
        client(base, "tx_not_a_key").fetch_balance()
    reader = client(base, api_key_create(user=buyer, name="r", scopes=["read"]).secret)
    with pytest.raises(ccxt.PermissionDenied):
        reader.create_order(UNIFIED, "limit", "buy", 1, 8)
