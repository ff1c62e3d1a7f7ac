from __future__ import annotations

import pytest

from exchange.markets.models import Market
from exchange.markets.services import demo_markets_load
from exchange.runner.embedded import inline_reset


@pytest.fixture(autouse=True)
def _fresh_inline_runner():
    inline_reset()
    yield
    inline_reset()


@pytest.fixture
def markets(db: None, settings) -> list[Market]:
    settings.DEMO = True  # as under `make run` (demo providers quote without an endpoint)
    demo_markets_load()
    return list(Market.objects.order_by("symbol"))
