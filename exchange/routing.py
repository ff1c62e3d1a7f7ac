"""Websocket routes, and who may use a session on them."""

from __future__ import annotations

from typing import Any

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from exchange.marketdata.consumers import FeedConsumer

websocket_urlpatterns = [
    path("ws/v1", FeedConsumer.as_asgi()),
]


class BrowserOriginValidator:
    """The Origin rule of the feed, against cross-site websocket hijacking.

    A browser sends the site's cookies with a websocket handshake whatever page opened it, and it
    always sends that page's ``Origin``: so a handshake with an Origin must come from an allowed
    host (``ALLOWED_HOSTS``), or it is refused. A handshake without an Origin is not a browser's —
    a bot (most websocket libraries send none) — and is accepted with its cookies dropped: it
    reads public channels, or becomes a user only with an API key (``Authorization: Bearer`` on
    the handshake or an ``auth`` op). A session never works without an allowed Origin.
    Wrap it around the cookie and session middleware so they never see the dropped cookies.
    """

    def __init__(self, application: Any) -> None:
        self.application = application
        self.browser_application = AllowedHostsOriginValidator(application)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = scope.get("headers", [])
        if scope["type"] == "websocket" and not any(name == b"origin" for name, _ in headers):
            scope = {**scope, "headers": [(n, v) for n, v in headers if n != b"cookie"]}
            return await self.application(scope, receive, send)
        return await self.browser_application(scope, receive, send)
