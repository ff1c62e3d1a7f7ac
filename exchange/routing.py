"""Websocket routes."""

from django.urls import path

from exchange.marketdata.consumers import FeedConsumer

websocket_urlpatterns = [
    path("ws/v1", FeedConsumer.as_asgi()),
]
