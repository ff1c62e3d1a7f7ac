from collections.abc import Iterator

import pytest

from orders.fastpath import OrderFastPath
from tests.orders.conftest import (  # noqa: F401  (shared trading fixtures)
    _fresh_inline_runner,
    fund,
    market,
    trader,
)


@pytest.fixture
def app(postgres, settings) -> Iterator[OrderFastPath]:
    """The served ASGI app: bots' orders through the fast path, the rest through Django."""
    from exchange.handler import SyncChainASGIHandler

    settings.SECURE_SSL_REDIRECT = False
    fast = OrderFastPath(SyncChainASGIHandler())
    yield fast
    fast.stop()
