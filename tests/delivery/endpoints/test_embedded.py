"""``make run`` has no beat: the probe thread of the served process probes instead."""

from __future__ import annotations

import threading
import time

import pytest

from exchange.delivery.endpoints import embedded
from exchange.delivery.endpoints.models import HealthSample
from tests.delivery.endpoints.helpers import live_endpoint

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_probe_thread_runs_only_for_the_demo_without_beat(
    settings, make_user, market, upstream
):
    settings.DELIVERY_PROBE_INTERVAL_SECONDS = 0.05
    settings.CELERY_TASK_ALWAYS_EAGER = True
    endpoint = live_endpoint(make_user(role="provider"), market, base_url=upstream.base_url)
    endpoint.model_id = "qwen3.6-plus"
    endpoint.save()
    embedded._stop = threading.Event()
    embedded._thread = None
    settings.DEMO = False
    embedded.probes_start()
    assert embedded._thread is None
    settings.DEMO = True
    embedded.probes_start()
    try:
        deadline = time.monotonic() + 10
        while HealthSample.objects.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the probes reached the upstream, with its stored key (the helper's, so refused: 401)
        assert HealthSample.objects.count() >= 2
        assert not HealthSample.objects.filter(ok=True).exists()
        assert (
            "POST",
            "/v1/chat/completions",
            "Bearer sk-test-not-a-real-key",
        ) in upstream.behaviour.seen
    finally:
        embedded.probes_stop()
        embedded._thread.join(5)
        embedded._thread = None
