from tests.orders.conftest import (  # noqa: F401  (shared trading fixtures)
    _fresh_inline_runner,
    fund,
    market,
    trader,
)
from tests.web.test_browser import browser  # noqa: F401  (Chromium through Playwright)
