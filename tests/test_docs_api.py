"""docs/api.md: its bot examples run as written against a live exchange, and its error table
lists every error code the API answers with."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.services import api_key_create
from exchange.api_errors import _DRF_CODES
from exchange.delivery.endpoints.models import Endpoint
from exchange.errors import ExchangeError
from orders.models import Order
from tests.asgi_server import asgi_server
from tests.delivery.endpoints.helpers import live_endpoint
from tests.orders.conftest import SYMBOL, fund, market  # noqa: F401  (fixtures)

ERROR_MODULES = (
    "accounts.funding.services", "accounts.onboarding", "accounts.services",
    "exchange.delivery.endpoints.errors", "exchange.delivery.escrow.services",
    "exchange.demo.funds", "orders.capacity",
)  # fmt: skip
ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def example(name: str) -> str:
    """The Python block that follows ``<!-- example: name -->`` in docs/api.md."""
    found = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)\n```", DOC, re.DOTALL)
    assert found, f"no example {name} in docs/api.md"
    return found.group(1)


def _codes(klass: type[ExchangeError]) -> set[str]:
    return {klass.code}.union(*(_codes(sub) for sub in klass.__subclasses__()))


def test_the_error_table_lists_every_code() -> None:
    for module in ERROR_MODULES:  # every error class defined
        importlib.import_module(module)

    table = set(re.findall(r"^\| (`.*?`) \|", DOC, re.MULTILINE))
    documented = {code for cell in table for code in re.findall(r"`([a-z_]+)`", cell)}
    codes = _codes(ExchangeError) | set(_DRF_CODES.values())
    assert codes - documented == set()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["bot", "ccxt"])
def test_the_bot_example_runs_as_written(name, postgres, redis_url, market, make_user, fund):  # noqa: F811
    seller, bot = make_user(), make_user()
    fund(seller, tokens=10_000_000, market=market)
    fund(bot, cny=100)
    if not Endpoint.objects.filter(provider=seller, market=market).exists():
        live_endpoint(seller, market)
    seller_key = api_key_create(user=seller, name="s", scopes=["read", "trade"]).secret
    bot_key = api_key_create(user=bot, name="bot", scopes=["read", "trade"]).secret
    with asgi_server() as (base, _):
        import httpx

        ask = httpx.post(
            base + "/api/v1/orders",
            json={"market": SYMBOL, "side": "sell", "price": "8.10", "quantity": "1"},
            headers={"Authorization": f"Bearer {seller_key}"},
            timeout=30,
        )
        assert ask.status_code == 201, ask.text
        done = subprocess.run(
            [sys.executable, "-c", example(name)],
            env={**os.environ, "EXCHANGE_URL": base, "EXCHANGE_API_KEY": bot_key},
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # what it did: one bid of its own, placed once and cancelled (by its client order id)
    orders = list(Order.objects.filter(user=bot).values_list("client_order_id", "status"))
    assert orders == [(f"docs-{name}-1", "cancelled")]
    assert "8.1" in done.stdout  # it read the best ask
