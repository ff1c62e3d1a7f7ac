"""Public per-provider statistics of a market: exact figures from known samples."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from exchange.delivery.endpoints.models import Endpoint, HealthSample, HealthStatus, SampleSource
from exchange.delivery.endpoints.services import (
    request_outcome_record,
    request_outcomes_record,
    samples_prune,
)
from tests.delivery.endpoints.conftest import OUT
from tests.delivery.endpoints.helpers import live_endpoint

pytestmark = pytest.mark.django_db


def sample(endpoint, minutes_ago: float, ok: bool, ttft=None, tps=None, now=None) -> None:
    HealthSample.objects.create(
        endpoint=endpoint,
        provider_id=endpoint.provider_id,
        market_id=endpoint.market_id,
        at=(now or timezone.now()) - timedelta(minutes=minutes_ago),
        source=SampleSource.PROBE,
        ok=ok,
        first_token_ms=ttft,
        output_tokens_per_second=Decimal(tps) if tps is not None else None,
    )


def test_uptime_and_percentiles_are_exact(make_user, market, input_market) -> None:
    alpha, beta, gamma = (make_user(role="provider") for _ in range(3))
    a = live_endpoint(alpha, market)
    live_endpoint(beta, market)  # registered, no samples yet
    other_market = live_endpoint(gamma, input_market)
    # last 5 minutes: 2 ok, 1 error
    sample(a, 1, True, 100, "10.5")
    sample(a, 2, True, 200, "20.25")
    sample(a, 3, False)
    # 5 to 30 minutes ago: 3 ok, 1 error
    sample(a, 10, True, 300, "30")
    sample(a, 20, True, 400, "40.125")
    sample(a, 29, True, 500, "50")
    sample(a, 25, False)
    # 30 minutes to a day ago: 3 ok, 2 errors (their timings are outside the 30-minute window)
    for minutes in (40, 120, 600):
        sample(a, minutes, True, 9000, "1")
    sample(a, 60, False)
    sample(a, 1400, False)
    # older than a day: not counted anywhere
    for _ in range(5):
        sample(a, 1500, False)
    sample(other_market, 1, False)

    response = APIClient().get(f"/api/v1/markets/{OUT}/providers")

    assert response.status_code == 200
    rows = response.json()
    assert [row["provider_id"] for row in rows] == [alpha.id, beta.id]
    first = rows[0]
    assert first["status"] == "healthy"
    assert first["uptime"] == {
        "5m": {"ratio": "0.6667", "successes": 2, "errors": 1},
        "30m": {"ratio": "0.7143", "successes": 5, "errors": 2},
        "1d": {"ratio": "0.6667", "successes": 8, "errors": 4},
    }
    # nearest rank over [100, 200, 300, 400, 500]: p50 = 300, p90 = 500
    assert first["first_token_ms"] == {"p50": 300, "p90": 500}
    assert first["output_tokens_per_second"] == {"p50": "30.000", "p90": "50.000"}
    assert rows[1]["uptime"]["1d"] == {"ratio": None, "successes": 0, "errors": 0}
    assert rows[1]["first_token_ms"] == {"p50": None, "p90": None}


def test_served_requests_feed_the_statistics(make_user, market) -> None:
    endpoint = live_endpoint(make_user(role="provider"), market)
    request_outcome_record(
        endpoint_id=endpoint.id,
        ok=True,
        first_token_ms=250,
        output_tokens_per_second=Decimal("42.5"),
    )
    request_outcome_record(
        endpoint_id=endpoint.id, ok=False, first_token_ms=None, output_tokens_per_second=None
    )
    row = APIClient().get(f"/api/v1/markets/{OUT}/providers").json()[0]
    assert row["uptime"]["5m"] == {"ratio": "0.5000", "successes": 1, "errors": 1}
    assert row["first_token_ms"] == {"p50": 250, "p90": 250}
    assert row["output_tokens_per_second"] == {"p50": "42.500", "p90": "42.500"}
    assert HealthSample.objects.filter(source=SampleSource.REQUEST).count() == 2


def test_a_served_success_brings_a_failing_endpoint_back(make_user, market) -> None:
    endpoint = live_endpoint(make_user(role="provider"), market)
    endpoint.status = HealthStatus.FAILING
    endpoint.failing_since = timezone.now()
    endpoint.consecutive_failures = 2
    endpoint.save()
    request_outcome_record(
        endpoint_id=endpoint.id, ok=False, first_token_ms=None, output_tokens_per_second=None
    )
    endpoint.refresh_from_db()
    assert endpoint.status == HealthStatus.FAILING  # one failed request is not an outage
    request_outcome_record(
        endpoint_id=endpoint.id, ok=True, first_token_ms=90, output_tokens_per_second=None
    )
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.failing_since, endpoint.consecutive_failures) == (
        HealthStatus.HEALTHY,
        None,
        0,
    )


def test_a_batch_of_served_requests_is_recorded_as_each_alone(make_user, market) -> None:
    """The gateway's finish hop records a batch in two statements: the same samples as one
    call each, an unknown endpoint's dropped, a failing endpoint that answered made healthy."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    served = live_endpoint(make_user(role="provider"), market)
    failing = live_endpoint(make_user(role="provider"), market)
    Endpoint.objects.filter(id=failing.id).update(
        status=HealthStatus.FAILING, failing_since=timezone.now(), consecutive_failures=2
    )
    with CaptureQueriesContext(connection) as queries:
        request_outcomes_record(
            outcomes=[
                (served.id, True, 250, Decimal("42.5")),
                (served.id, False, 999, Decimal("1")),  # a failure keeps no timings
                (failing.id, True, -5, Decimal("NaN")),  # unusable timings are dropped
                (10**12, True, 100, None),  # an endpoint that is gone
            ]
        )

    assert len([q for q in queries if "healthsample" in q["sql"]]) == 1
    rows = sorted(
        HealthSample.objects.filter(source=SampleSource.REQUEST).values_list(
            "endpoint_id", "ok", "first_token_ms", "output_tokens_per_second"
        ),
        key=lambda row: (row[0], not row[1]),
    )
    assert rows == [
        (served.id, True, 250, Decimal("42.5")),
        (served.id, False, None, None),
        (failing.id, True, None, None),
    ]
    failing.refresh_from_db()
    assert (failing.status, failing.failing_since, failing.consecutive_failures) == (
        HealthStatus.HEALTHY,
        None,
        0,
    )


def test_deleting_an_endpoint_keeps_its_public_record(make_user, market, client_for) -> None:
    provider = client_for("provider")
    endpoint = live_endpoint(provider.user, market)
    sample(endpoint, 1, False)
    provider.delete(f"/api/v1/provider/endpoints/{endpoint.id}")
    row = APIClient().get(f"/api/v1/markets/{OUT}/providers").json()[0]
    assert row["provider_id"] == provider.user.id
    assert row["status"] is None
    assert row["uptime"]["5m"] == {"ratio": "0.0000", "successes": 0, "errors": 1}


def test_prune_deletes_only_samples_past_the_longest_window(make_user, market) -> None:
    endpoint = live_endpoint(make_user(role="provider"), market)
    now = timezone.now()
    sample(endpoint, 60 * 24 + 30, True, now=now)  # inside retention (1 day + 1 hour)
    sample(endpoint, 60 * 26, True, now=now)  # past it
    assert samples_prune(now=now) == 1
    assert HealthSample.objects.count() == 1


def test_unknown_market_is_404() -> None:
    response = APIClient().get("/api/v1/markets/NOPE/providers")
    assert response.status_code == 404


def test_an_outcome_for_an_endpoint_removed_mid_request_is_ignored(make_user, market) -> None:
    endpoint = live_endpoint(make_user(role="provider"), market)
    request_outcome_record(
        endpoint_id=endpoint.id, ok=True, first_token_ms=10, output_tokens_per_second=None
    )
    endpoint_id = endpoint.id
    endpoint.delete()
    request_outcome_record(
        endpoint_id=endpoint_id, ok=True, first_token_ms=10, output_tokens_per_second=None
    )
    request_outcome_record(
        endpoint_id=endpoint_id, ok=False, first_token_ms=None, output_tokens_per_second="bad"
    )
    assert HealthSample.objects.count() == 1  # the first one, kept (its endpoint link NULL)
    assert HealthSample.objects.get().endpoint_id is None
