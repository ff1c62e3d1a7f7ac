"""Websocket routes. Market-data consumers register here."""

from django.urls import path

from exchange.consumers import StatusConsumer

websocket_urlpatterns = [
    path("ws/v1", StatusConsumer.as_asgi()),
]
