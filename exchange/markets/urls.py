from django.urls import path

from exchange.markets import api

urlpatterns = [
    path("markets", api.MarketListApi.as_view(), name="market-list"),
    path("markets/<str:symbol>", api.MarketDetailApi.as_view(), name="market-detail"),
]
