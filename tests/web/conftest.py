from tests.orders.conftest import (  # noqa: F401  (shared fixtures: a market, funding, inline runner)
    SYMBOL,
    _fresh_inline_runner,
    fund,
    market,
)
