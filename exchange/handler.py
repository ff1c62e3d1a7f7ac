"""Django's ASGI handler, with the request chain run in one thread hop instead of dozens.

Under ASGI Django runs its middleware chain in async mode. Django's own middleware (and most
third-party middleware) are ``MiddlewareMixin`` classes whose async mode runs
``process_request`` and ``process_response`` each through ``sync_to_async``: two thread hops
per middleware, about twenty per request here, plus one for the (synchronous) view. Measured on
the 2-core machine, that made a view that returns a constant cost ~6 ms of CPU per request (300
requests/s), against ~0.7 ms for uvicorn alone (docs/performance.md).

Every HTTP view of the project is synchronous (DRF, forms, the admin), so this handler loads the
chain in sync mode and enters it with one ``sync_to_async`` per request: middleware and view run
in that one thread, as under WSGI. Websockets do not pass through here (Channels routes them).
"""

from __future__ import annotations

from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        self._middleware_chain: Any = sync_to_async(self._middleware_chain, thread_sensitive=True)


def http_application() -> SyncChainASGIHandler:
    """``django.core.asgi.get_asgi_application`` with this handler."""
    django.setup(set_prefix=False)
    return SyncChainASGIHandler()
