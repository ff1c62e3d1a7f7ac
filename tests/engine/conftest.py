"""The engine's tests need no Django: override the suite-wide autouse fixtures that touch it."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """The engine keeps no cache; this shadows ``tests/conftest.py``'s Django cache clearing."""
