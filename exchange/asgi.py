"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

from exchange.handler import http_application

# Django must be set up before anything imports models.
django_asgi_app = http_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from exchange.delivery.endpoints.embedded import probes_start  # noqa: E402
from exchange.delivery.escrow.embedded import escrow_jobs_start  # noqa: E402
from exchange.delivery.gateway.proxy import GatewayApp  # noqa: E402
from exchange.demo.simulator import demo_start  # noqa: E402
from exchange.metrics import RequestEdge, WebsocketCount  # noqa: E402
from exchange.routing import BrowserOriginValidator, websocket_urlpatterns  # noqa: E402
from exchange.runner.embedded import embedded_start  # noqa: E402
from orders.fastpath import OrderFastPath  # noqa: E402

application = ProtocolTypeRouter(
    {
        # every request: an id (X-Request-ID, in its log lines) and its time (exchange.metrics);
        # bots' order requests skip Django's request machinery (orders.fastpath);
        # /v1 (the OpenAI-compatible gateway) is async in front of everything else
        "http": RequestEdge(GatewayApp(OrderFastPath(django_asgi_app))),
        # A session needs an allowed Origin; bots without one use API keys (exchange.routing).
        "websocket": WebsocketCount(
            BrowserOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)

# With ENGINE_RUNNER=embedded (the default of `make run`) the runner is a thread of this process.
embedded_start()
demo_start()  # the live demo (DEMO=1, `make run` only): seeded bots trading
probes_start()  # endpoint health probes when no Celery beat runs (the demo)
escrow_jobs_start()  # escrow release and lot expiry: likewise
