"""Requests waiting for the runner are woken by its announcements, not by polling."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache

from exchange.marketdata.state import runner_seq_key
from exchange.runner import progress


@pytest.fixture(autouse=True)
def _fresh_versions():
    progress._versions.clear()
    yield
    progress._versions.clear()


def test_a_waiter_wakes_as_soon_as_its_market_moves() -> None:
    since = progress.progress_version([7])
    woke = []

    def wait() -> None:
        started = time.monotonic()
        progress.progress_wait([7], since=since, timeout=5.0)
        woke.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.02)
    progress.progress_announce(market_id=7, seq=41)
    waiter.join(timeout=5)
    assert woke
    assert woke[0] < progress.FALLBACK_SECONDS  # woken, not timed out
    assert progress.progress_version([7]) == (41,)
    assert cache.get(runner_seq_key(7)) == 41  # for processes that missed the message


def test_another_markets_progress_does_not_end_the_wait_but_the_cache_is_read() -> None:
    since = progress.progress_version([8])
    progress.progress_announce(market_id=9, seq=5)
    started = time.monotonic()
    progress.progress_wait([8], since=since, timeout=5.0)
    # nothing for market 8: the wait lasts one fallback slice, then consults the cache
    assert time.monotonic() - started >= progress.FALLBACK_SECONDS * 0.9
    cache.set(runner_seq_key(8), 3)  # the runner moved, its message lost
    progress.progress_wait([8], since=since, timeout=5.0)
    assert progress.progress_version([8]) == (3,)


def test_announcements_reach_other_processes_through_redis(settings) -> None:
    """The listener thread turns a PUBLISH (from a runner process) into a local wake-up."""
    if not settings.REDIS_URL:
        pytest.fail("this test needs REDIS_URL (CI sets it)")
    progress.progress_version([11])  # starts this process's listener
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the subscription may take a moment
        progress._redis().publish(progress.CHANNEL, "11:77")
        if progress.progress_version([11]) == (77,):
            break
        time.sleep(0.05)
    assert progress.progress_version([11]) == (77,)
