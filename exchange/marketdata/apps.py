from django.apps import AppConfig


class MarketDataConfig(AppConfig):
    name = "exchange.marketdata"
    label = "marketdata"
    verbose_name = "Market data"
