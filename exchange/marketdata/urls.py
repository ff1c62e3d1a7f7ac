from django.urls import path

from exchange.marketdata import api

urlpatterns = [
    path("tickers", api.TickerListApi.as_view(), name="tickers"),
    path("markets/<str:symbol>/ticker", api.TickerApi.as_view(), name="market-ticker"),
    path("markets/<str:symbol>/book", api.BookApi.as_view(), name="market-book"),
    path("markets/<str:symbol>/trades", api.TradesApi.as_view(), name="market-trades"),
    path("markets/<str:symbol>/candles", api.CandlesApi.as_view(), name="market-candles"),
]
