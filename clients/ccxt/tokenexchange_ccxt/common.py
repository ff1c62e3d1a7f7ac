"""What the REST class and the websocket class share: ``describe``, signing, the error
mapping, and parsing the API's answers into ccxt's structures (a mixin: each class puts it in
front of its ccxt base, ``Exchange`` or ``async_support.Exchange``)."""

from __future__ import annotations

from typing import Any

import ccxt
from ccxt.base.decimal_to_precision import TICK_SIZE
from ccxt.base.types import Market

from tokenexchange_ccxt.errors import ERROR_CODES

_STATUSES = {
    "pending": "open",
    "open": "open",
    "partially_filled": "open",
    "filled": "closed",
    "cancelled": "canceled",
    "rejected": "rejected",
}


class TokenExchangeCommon:
    """Needs a ccxt ``Exchange`` after it in the class's bases (its helpers: ``safe_*``,
    ``parse8601``, ``deep_extend``...)."""

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

    @staticmethod
    def _page(since: int | None, limit: int | None, params: dict[str, Any]) -> dict[str, Any]:
        query = dict(params)
        if since is not None:
            query["since"] = int(since)
        if limit is not None:  # the API's most per page (more: follow "next")
            query["limit"] = max(1, min(int(limit), 1000))
        return query

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
