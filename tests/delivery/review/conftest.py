"""Fixtures for the review's proofs: the gateway's live server and the escrow's traders."""

from tests.delivery.escrow.conftest import (  # noqa: F401  (shared fixtures)
    _fresh_inline_runner,
    make_trader,
    pair,
    provider,
)
from tests.delivery.gateway.conftest import make_provider  # noqa: F401
