"""The token exchange's websocket (``/ws/v1``) through ccxt's asyncio base: ``watch_ticker``,
``watch_trades`` and ``watch_order_book``, with ccxt's own websocket client, caches and order
book (nothing of them copied: this class only subscribes and turns frames into ccxt's
structures). The book is a snapshot then absolute changes numbered by ``seq``; on a gap it
subscribes again for a fresh snapshot.

    exchange = tokenexchange({"urls": {"api": {"rest": "https://HOST/api/v1"}}})
    book = await exchange.watch_order_book("QWEN3.6-PLUS-OUT/CNY")
"""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt.async_support
from ccxt.async_support.base.ws.cache import ArrayCache

from tokenexchange_ccxt.common import TokenExchangeCommon

__all__ = ["tokenexchange"]


class tokenexchange(TokenExchangeCommon, ccxt.async_support.Exchange):  # ccxt: named by its id
    _pending: set[asyncio.Future[Any]]

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._pending = set()
        super().__init__(config or {})

    def describe(self) -> dict[str, Any]:
        return self.deep_extend(
            super().describe(),
            {
                "pro": True,
                "has": {
                    "ws": True,
                    "watchTicker": True,
                    "watchTrades": True,
                    "watchOrderBook": True,
                },
                "options": {"tradesLimit": 1000},
            },
        )

    async def fetch_markets(self, params: dict[str, Any] | None = None) -> list[Any]:
        markets = await self.request("markets", "public", "GET", params or {})
        return [self.parse_market(market) for market in markets]

    def _ws_url(self) -> str:
        """``urls.api.ws``, or the REST URL's ``/ws/v1`` (http → ws, https → wss)."""
        url = self.safe_string(self.urls["api"], "ws")
        if url:
            return url
        rest = self.urls["api"]["rest"]
        origin = rest[: rest.index("/api/")] if "/api/" in rest else rest
        return "ws" + origin[len("http") :] + "/ws/v1"

    async def _subscribe(self, channel: str, symbol: str) -> Any:
        await self.load_markets()
        market = self.market(symbol)
        message_hash = channel + ":" + market["id"]
        request = {"op": "subscribe", "channels": [channel], "markets": [market["id"]]}
        return await self.watch(self._ws_url(), message_hash, request, message_hash)

    async def watch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        return await self._subscribe("ticker", symbol)

    async def watch_trades(
        self,
        symbol: str,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Any]:
        trades = await self._subscribe("trades", symbol)
        return self.filter_by_since_limit(trades, since, limit, "timestamp", True)

    async def watch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        book = await self._subscribe("book", symbol)
        return book.limit()

    # -- frames -----------------------------------------------------------------------------
    def handle_message(self, client: Any, message: Any) -> None:
        if not isinstance(message, dict):
            return
        channel = message.get("channel")
        if channel == "ticker":
            ticker = self.parse_ticker(message)
            self.tickers[ticker["symbol"]] = ticker
            client.resolve(ticker, "ticker:" + message["market"])
        elif channel == "trades":
            self._handle_trades(client, message)
        elif channel == "book":
            self._handle_book(client, message)
        elif message.get("type") == "error":
            error = self.exceptions["exact"].get(message.get("code"), ccxt.ExchangeError)
            client.reject(error(self.id + " " + self.json(message)))

    def _handle_trades(self, client: Any, message: dict[str, Any]) -> None:
        market = self.safe_market(message["market"])
        symbol = market["symbol"]
        stored = self.trades.get(symbol)
        if stored is None:
            stored = self.trades[symbol] = ArrayCache(self.options["tradesLimit"])
        for trade in message["trades"]:
            stored.append(self.parse_trade(trade, market))
        client.resolve(stored, "trades:" + message["market"])

    def _handle_book(self, client: Any, message: dict[str, Any]) -> None:
        market = self.safe_market(message["market"])
        symbol = market["symbol"]
        message_hash = "book:" + message["market"]
        timestamp = self.parse8601(message.get("time"))
        if message["type"] == "snapshot":
            book = self.order_book({})
            book.reset(
                {
                    "bids": [[float(p), float(q)] for p, q in message["bids"]],
                    "asks": [[float(p), float(q)] for p, q in message["asks"]],
                    "nonce": message["seq"],
                    "timestamp": timestamp,
                    "datetime": self.iso8601(timestamp),
                    "symbol": symbol,
                }
            )
            self.orderbooks[symbol] = book
            client.resolve(book, message_hash)
            return
        book = self.orderbooks.get(symbol)
        if book is None or book["nonce"] is None or message["seq"] <= book["nonce"]:
            return  # before the snapshot, or already in it
        if message["seq"] != book["nonce"] + 1:  # a lost update: a fresh snapshot
            del self.orderbooks[symbol]
            request = {"op": "subscribe", "channels": ["book"], "markets": [message["market"]]}
            task = asyncio.ensure_future(client.send(request))
            self._pending.add(task)  # held until done: a bare task may be collected mid-way
            task.add_done_callback(self._pending.discard)
            return
        for side in ("bids", "asks"):
            for price, quantity in message[side]:
                book[side].store(float(price), float(quantity))
        book["nonce"] = message["seq"]
        book["timestamp"] = timestamp
        book["datetime"] = self.iso8601(timestamp)
        client.resolve(book, message_hash)
