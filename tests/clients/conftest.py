import decimal

import pytest

from tests.orders.conftest import (  # noqa: F401  (shared trading fixtures)
    _fresh_inline_runner,
    fund,
    market,
)


@pytest.fixture(autouse=True)
def _decimal_context():
    """ccxt's decimal_to_precision sets the thread's decimal context (rounding half up,
    Underflow trapped) and never restores it: keep that out of every later test."""
    with decimal.localcontext():
        yield
