"""The token exchange as a ccxt exchange: ``tokenexchange({"apiKey": ..., "urls": ...})``.

Written against ccxt's documented extension points only (``describe``, ``sign``,
``handle_errors`` and the unified methods); nothing of ccxt is copied. The API's conventions
(``docs/api.md`` of the exchange): prices are quote currency per MTok, quantities MTok, both
decimal strings; times RFC 3339 with milliseconds (sent here as integer milliseconds, which the
API accepts as well); history pages by ``since``/``limit``; every error is
``{"error": {"code", "message", "details"}}`` and the code, not the HTTP status, picks the
exception.
"""

from __future__ import annotations

from typing import Any

import ccxt
from ccxt.base.decimal_to_precision import TICK_SIZE
from ccxt.base.types import Market

from tokenexchange_ccxt.errors import ERROR_CODES

__all__ = ["ERROR_CODES", "tokenexchange"]

_STATUSES = {
    "pending": "open",
    "open": "open",
    "partially_filled": "open",
    "filled": "closed",
    "cancelled": "canceled",
    "rejected": "rejected",
}


class tokenexchange(ccxt.Exchange):  # ccxt names an exchange's class by its id
    def describe(self) -> dict[str, Any]:
        return self.deep_extend(
            super().describe(),
            {
                "id": "tokenexchange",
                "name": "Token Exchange",
                "countries": [],
                "version": "v1",
                "rateLimit": 20,
                "certified": False,
                "pro": False,
                "has": {
                    "CORS": None,
                    "spot": True,
                    "margin": False,
                    "swap": False,
                    "future": False,
                    "option": False,
                    "cancelAllOrders": True,
                    "cancelOrder": True,
                    "createOrder": True,
                    "createOrders": True,
                    "fetchBalance": True,
                    "fetchClosedOrders": True,
                    "fetchMarkets": True,
                    "fetchMyTrades": True,
                    "fetchOHLCV": True,
                    "fetchOpenOrders": True,
                    "fetchOrder": True,
                    "fetchOrderBook": True,
                    "fetchOrders": True,
                    "fetchTicker": True,
                    "fetchTickers": True,
                    "fetchTrades": True,
                },
                "timeframes": {name: name for name in ("1m", "5m", "15m", "1h", "4h", "1d")},
                "urls": {
                    "api": {"rest": "http://127.0.0.1:8000/api/v1"},
                    "doc": ["docs/api.md"],
                },
                "requiredCredentials": {"apiKey": True, "secret": False},
                "precisionMode": TICK_SIZE,
                "exceptions": {"exact": dict(ERROR_CODES), "broad": {}},
                # the body's code decides (handle_errors); a status alone only if none came
                "httpExceptions": {
                    "400": ccxt.BadRequest,
                    "401": ccxt.AuthenticationError,
                    "403": ccxt.PermissionDenied,
                    "404": ccxt.BadRequest,
                    "409": ccxt.InvalidOrder,
                    "422": ccxt.InvalidOrder,
                    "429": ccxt.RateLimitExceeded,
                    "500": ccxt.ExchangeError,
                    "502": ccxt.ExchangeNotAvailable,
                    "503": ccxt.ExchangeNotAvailable,
                    "504": ccxt.RequestTimeout,
                },
                "options": {"maxLimit": 1000},
            },
        )

    # -- transport --------------------------------------------------------------------------
    def sign(
        self,
        path: str,
        api: Any = "public",
        method: str = "GET",
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        params = params or {}
        section = api[0] if isinstance(api, list) else api
        names = self.extract_params(path)
        encoded = {name: self.encode_uri_component(str(params[name])) for name in names}
        url = self.urls["api"]["rest"] + "/" + self.implode_params(path, encoded)
        query = self.omit(params, names)
        headers = {"Accept": "application/json"}
        if section == "private":
            self.check_required_credentials()
            headers["Authorization"] = "Bearer " + self.apiKey
        if method in ("GET", "DELETE"):
            if query:
                url += "?" + self.urlencode(query)
        else:
            body = self.json(query)
            headers["Content-Type"] = "application/json"
        return {"url": url, "method": method, "body": body, "headers": headers}

    def handle_errors(
        self,
        code: int,
        reason: str,
        url: str,
        method: str,
        headers: Any,
        body: str,
        response: Any,
        request_headers: Any,
        request_body: Any,
    ) -> None:
        if not isinstance(response, dict):
            return
        error = response.get("error")
        if not isinstance(error, dict):
            return
        error_code = self.safe_string(error, "code")
        feedback = self.id + " " + (body or "")
        self.throw_exactly_matched_exception(self.exceptions["exact"], error_code, feedback)
        raise ccxt.ExchangeError(feedback)

    def _get(self, path: str, params: dict[str, Any], api: str = "public") -> Any:
        return self.request(path, api, "GET", params)

    @staticmethod
    def _page(since: int | None, limit: int | None, params: dict[str, Any]) -> dict[str, Any]:
        query = dict(params)
        if since is not None:
            query["since"] = int(since)
        if limit is not None:  # the API's most per page (more: follow "next")
            query["limit"] = max(1, min(int(limit), 1000))
        return query

    # -- markets and market data ------------------------------------------------------------
    def fetch_markets(self, params: dict[str, Any] | None = None) -> list[Market]:
        return [self.parse_market(market) for market in self._get("markets", params or {})]

    def parse_market(self, market: dict[str, Any]) -> Market:
        base, quote = market["base"], market["quote_currency"]
        return self.safe_market_structure(
            {
                "id": market["symbol"],
                "symbol": base + "/" + quote,
                "base": base,
                "quote": quote,
                "settle": None,
                "baseId": base,
                "quoteId": quote,
                "settleId": None,
                "type": "spot",
                "spot": True,
                "margin": False,
                "swap": False,
                "future": False,
                "option": False,
                "contract": False,
                "active": market["status"] == "open",
                "linear": None,
                "inverse": None,
                "contractSize": None,
                "expiry": None,
                "expiryDatetime": None,
                "strike": None,
                "optionType": None,
                "taker": self.safe_number(market, "taker_fee_rate"),
                "maker": self.safe_number(market, "maker_fee_rate"),
                "precision": {
                    "amount": self.safe_number(market, "lot_size"),
                    "price": self.safe_number(market, "tick_size"),
                },
                "limits": {
                    "leverage": {"min": None, "max": None},
                    "amount": {"min": self.safe_number(market, "min_quantity"), "max": None},
                    "price": {"min": self.safe_number(market, "tick_size"), "max": None},
                    "cost": {"min": None, "max": None},
                },
                "created": None,
                "info": market,
            }
        )

    def fetch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        self.load_markets()
        market = self.market(symbol)
        ticker = self._get("markets/{symbol}/ticker", {"symbol": market["id"], **(params or {})})
        return self.parse_ticker(ticker, market)

    def fetch_tickers(self, symbols: list[str] | None = None, params: dict[str, Any] | None = None):
        self.load_markets()
        tickers = [self.parse_ticker(t) for t in self._get("tickers", params or {})]
        return self.filter_by_array_tickers(tickers, "symbol", symbols)

    def parse_ticker(self, ticker: dict[str, Any], market: Market | None = None) -> Any:
        market = self.safe_market(self.safe_string(ticker, "market"), market)
        timestamp = self.parse8601(self.safe_string(ticker, "time"))
        last = self.safe_string(ticker, "last")
        return self.safe_ticker(
            {
                "symbol": market["symbol"],
                "timestamp": timestamp,
                "datetime": self.iso8601(timestamp),
                "high": self.safe_string(ticker, "high_24h"),
                "low": self.safe_string(ticker, "low_24h"),
                "bid": self.safe_string(ticker, "bid"),
                "bidVolume": self.safe_string(ticker, "bid_quantity"),
                "ask": self.safe_string(ticker, "ask"),
                "askVolume": self.safe_string(ticker, "ask_quantity"),
                "vwap": None,
                "open": self.safe_string(ticker, "open_24h"),
                "close": last,
                "last": last,
                "previousClose": None,
                "change": None,
                "percentage": self.safe_string(ticker, "change_24h_percent"),
                "average": None,
                "baseVolume": self.safe_string(ticker, "volume_24h"),
                "quoteVolume": self.safe_string(ticker, "quote_volume_24h"),
                "info": ticker,
            },
            market,
        )

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

    def parse_ohlcv(self, ohlcv: dict[str, Any], market: Market | None = None) -> list[Any]:
        return [
            self.parse8601(self.safe_string(ohlcv, "time")),
            self.safe_number(ohlcv, "open"),
            self.safe_number(ohlcv, "high"),
            self.safe_number(ohlcv, "low"),
            self.safe_number(ohlcv, "close"),
            self.safe_number(ohlcv, "volume"),
        ]

    def parse_trade(self, trade: dict[str, Any], market: Market | None = None) -> Any:
        """A public trade (``taker_side``) or one of my fills (``side``, ``order_id``)."""
        market = self.safe_market(self.safe_string(trade, "market"), market)
        timestamp = self.parse8601(
            self.safe_string(trade, "time") or self.safe_string(trade, "created_at")
        )
        fee = None
        if "fee" in trade:
            fee = {
                "cost": self.safe_string(trade, "fee"),
                "currency": self.safe_currency_code(self.safe_string(trade, "fee_currency")),
            }
        return self.safe_trade(
            {
                "id": self.safe_string(trade, "id"),
                "order": self.safe_string(trade, "order_id"),
                "timestamp": timestamp,
                "datetime": self.iso8601(timestamp),
                "symbol": market["symbol"],
                "type": None,
                "side": self.safe_string_2(trade, "side", "taker_side"),
                "takerOrMaker": self.safe_string(trade, "liquidity"),
                "price": self.safe_string(trade, "price"),
                "amount": self.safe_string(trade, "quantity"),
                "cost": self.safe_string(trade, "cost"),
                "fee": fee,
                "info": trade,
            },
            market,
        )

    # -- account ----------------------------------------------------------------------------
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

    # -- orders -----------------------------------------------------------------------------
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
        body: dict[str, Any] = {
            "market": market["id"],
            "side": side,
            "type": type,
            "quantity": self.amount_to_precision(symbol, amount),
        }
        if price is not None and type == "limit":
            body["price"] = self.price_to_precision(symbol, price)
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

    def parse_order(self, order: dict[str, Any], market: Market | None = None) -> Any:
        market = self.safe_market(self.safe_string(order, "market"), market)
        timestamp = self.parse8601(self.safe_string(order, "created_at"))
        fills = order.get("fills")
        trades = self.parse_trades(fills, market) if fills else None
        time_in_force = self.safe_string(order, "time_in_force")
        return self.safe_order(
            {
                "id": self.safe_string(order, "id"),
                "clientOrderId": self.safe_string(order, "client_order_id"),
                "timestamp": timestamp,
                "datetime": self.iso8601(timestamp),
                "lastTradeTimestamp": None,
                "lastUpdateTimestamp": self.parse8601(self.safe_string(order, "updated_at")),
                "status": _STATUSES.get(self.safe_string(order, "status", "")),
                "symbol": market["symbol"],
                "type": self.safe_string(order, "type"),
                "timeInForce": time_in_force,
                "postOnly": self.safe_bool(order, "post_only"),
                "side": self.safe_string(order, "side"),
                "price": self.safe_string(order, "price"),
                "triggerPrice": None,
                "amount": self.safe_string(order, "quantity"),
                "filled": self.safe_string(order, "filled_quantity"),
                "remaining": self.safe_string(order, "remaining_quantity"),
                "average": self.safe_string(order, "average_price"),
                "cost": self.safe_string(order, "cost"),
                "fee": {
                    "cost": self.safe_string(order, "fee"),
                    "currency": self.safe_currency_code(self.safe_string(order, "fee_currency")),
                },
                "trades": trades,
                "info": order,
            },
            market,
        )
