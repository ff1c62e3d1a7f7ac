from tests.orders.conftest import (  # noqa: F401  (shared trading fixtures)
    _fresh_inline_runner,
    fund,
    market,
)
