"""The token exchange as a ccxt exchange: ``tokenexchange({"apiKey": ..., "urls": ...})``.

Written against ccxt's documented extension points only (``describe``, ``sign``,
``handle_errors`` and the unified methods); nothing of ccxt is copied. The API's conventions
(``docs/api.md`` of the exchange): prices are quote currency per MTok, quantities MTok, both
decimal strings; times RFC 3339 with milliseconds (sent here as integer milliseconds, which the
API accepts as well); history pages by ``since``/``limit``; every error is
``{"error": {"code", "message", "details"}}`` and the code, not the HTTP status, picks the
exception. ``tokenexchange_ccxt.pro.tokenexchange`` adds ``watch_ticker``, ``watch_trades`` and
``watch_order_book`` over the websocket (asyncio).
"""

from __future__ import annotations

import decimal
from typing import Any

import ccxt
from ccxt.base.types import Market

from tokenexchange_ccxt.common import TokenExchangeCommon
from tokenexchange_ccxt.errors import ERROR_CODES

__all__ = ["ERROR_CODES", "tokenexchange"]


class tokenexchange(TokenExchangeCommon, ccxt.Exchange):  # ccxt names a class by its id
    def _get(self, path: str, params: dict[str, Any], api: str = "public") -> Any:
        return self.request(path, api, "GET", params)

    def fetch_markets(self, params: dict[str, Any] | None = None) -> list[Market]:
        return [self.parse_market(market) for market in self._get("markets", params or {})]

    def fetch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        self.load_markets()
        market = self.market(symbol)
        ticker = self._get("markets/{symbol}/ticker", {"symbol": market["id"], **(params or {})})
        return self.parse_ticker(ticker, market)

    def fetch_tickers(self, symbols: list[str] | None = None, params: dict[str, Any] | None = None):
        self.load_markets()
        tickers = [self.parse_ticker(t) for t in self._get("tickers", params or {})]
        return self.filter_by_array_tickers(tickers, "symbol", symbols)

    def fetch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        self.load_markets()
        market = self.market(symbol)
        query = {"symbol": market["id"], **(params or {})}
        if limit is not None:  # the API gives at most 100 levels per side
            query["depth"] = max(1, min(int(limit), 100))
        book = self._get("markets/{symbol}/book", query)
        timestamp = self.parse8601(self.safe_string(book, "time"))
        result = self.parse_order_book(book, market["symbol"], timestamp, "bids", "asks", 0, 1)
        result["nonce"] = self.safe_integer(book, "seq")
        return result

    def fetch_trades(
        self,
        symbol: str,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Any]:
        self.load_markets()
        market = self.market(symbol)
        query = self._page(since, limit, {"symbol": market["id"], **(params or {})})
        page = self._get("markets/{symbol}/trades", query)
        return self.parse_trades(page["results"], market, since, limit)

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[list[Any]]:
        self.load_markets()
        market = self.market(symbol)
        query = {"symbol": market["id"], "interval": self.safe_string(self.timeframes, timeframe)}
        query = self._page(since, limit, {**query, **(params or {})})
        page = self._get("markets/{symbol}/candles", query)
        return self.parse_ohlcvs(page["results"], market, timeframe, since, limit)

    def fetch_balance(self, params: dict[str, Any] | None = None) -> Any:
        self.load_markets()
        response = self._get("balances", params or {}, "private")
        result: dict[str, Any] = {"info": response}
        for balance in response["balances"]:
            result[self.safe_currency_code(balance["asset"])] = {
                "free": self.safe_string(balance, "available"),
                "used": self.safe_string(balance, "held"),
                "total": self.safe_string(balance, "total"),
            }
        return self.safe_balance(result)

    def _order_body(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        market = self.market(symbol)
        # ccxt's rounding sets the thread's decimal context and leaves it so: not the caller's
        with decimal.localcontext():
            quantity = self.amount_to_precision(symbol, amount)
            if price is not None and type == "limit":
                price = self.price_to_precision(symbol, price)
        body: dict[str, Any] = {
            "market": market["id"],
            "side": side,
            "type": type,
            "quantity": quantity,
        }
        if price is not None and type == "limit":
            body["price"] = price
        params = dict(params)
        client_order_id = self.safe_string_2(params, "clientOrderId", "client_order_id")
        if client_order_id is not None:
            body["client_order_id"] = client_order_id
        time_in_force = self.safe_string_upper_2(params, "timeInForce", "time_in_force")
        if time_in_force == "PO":
            body["post_only"] = True
        elif time_in_force is not None:
            body["time_in_force"] = time_in_force
        if self.safe_bool_2(params, "postOnly", "post_only"):
            body["post_only"] = True
        rest = self.omit(
            params,
            ["clientOrderId", "client_order_id", "timeInForce", "time_in_force", "postOnly",
             "post_only"],
        )  # fmt: skip
        return {**body, **rest}

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        self.load_markets()
        body = self._order_body(symbol, type, side, amount, price, params or {})
        return self.parse_order(self.request("orders", "private", "POST", body))

    def create_orders(self, orders: list[dict[str, Any]], params: dict[str, Any] | None = None):
        self.load_markets()
        bodies = [
            self._order_body(
                order["symbol"], order["type"], order["side"], order["amount"],
                order.get("price"), order.get("params") or {},
            )
            for order in orders
        ]  # fmt: skip
        body = {"orders": bodies, **(params or {})}
        response = self.request("orders/batch", "private", "POST", body)
        parsed = []
        for result in response["results"]:
            if "order" in result:
                parsed.append(self.parse_order(result["order"]))
            else:
                parsed.append(self.safe_order({"info": result, "status": "rejected"}))
        return parsed

    def cancel_order(
        self, id: str | None, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        """Cancel by the exchange's id, or by ``params["clientOrderId"]`` (``id`` None)."""
        self.load_markets()
        params = dict(params or {})
        client_order_id = self.safe_string_2(params, "clientOrderId", "client_order_id")
        params = self.omit(params, ["clientOrderId", "client_order_id"])
        if client_order_id is not None:
            path = "orders/by-client-id/{client_order_id}"
            params["client_order_id"] = client_order_id
        else:
            path = "orders/{id}"
            params["id"] = id
        return self.parse_order(self.request(path, "private", "DELETE", params))

    def cancel_all_orders(self, symbol: str | None = None, params: dict[str, Any] | None = None):
        self.load_markets()
        query = dict(params or {})
        if symbol is not None:
            query["market"] = self.market_id(symbol)
        response = self.request("orders", "private", "DELETE", query)
        return self.parse_orders(response["orders"])

    def fetch_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        self.load_markets()
        return self.parse_order(self._get("orders/{id}", {"id": id, **(params or {})}, "private"))

    def _orders(
        self,
        status: str,
        symbol: str | None,
        since: int | None,
        limit: int | None,
        params: dict[str, Any] | None,
    ) -> list[Any]:
        self.load_markets()
        query = self._page(since, limit, {"status": status, **(params or {})})
        market = None
        if symbol is not None:
            market = self.market(symbol)
            query["market"] = market["id"]
        page = self._get("orders", query, "private")
        return self.parse_orders(page["results"], market, since, limit)

    def fetch_orders(self, symbol=None, since=None, limit=None, params=None) -> list[Any]:
        return self._orders("all", symbol, since, limit, params)

    def fetch_open_orders(self, symbol=None, since=None, limit=None, params=None) -> list[Any]:
        return self._orders("open", symbol, since, limit, params)

    def fetch_closed_orders(self, symbol=None, since=None, limit=None, params=None) -> list[Any]:
        return self._orders("closed", symbol, since, limit, params)

    def fetch_my_trades(self, symbol=None, since=None, limit=None, params=None) -> list[Any]:
        self.load_markets()
        query = self._page(since, limit, dict(params or {}))
        market = None
        if symbol is not None:
            market = self.market(symbol)
            query["market"] = market["id"]
        page = self._get("fills", query, "private")
        return self.parse_trades(page["results"], market, since, limit)
