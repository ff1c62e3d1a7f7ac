"""History by time (issue 15): a client walking any history list by its `next` links, with any
`since`/`until`/`limit`, gets exactly the rows of the window — in order, without gaps or repeats —
even when the times are not in id order (concurrent transactions) and rows arrive mid-walk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from accounts.models import AuditAction, AuditEvent
from exchange.marketdata.models import Candle
from exchange.times import time_ms, time_text
from tests.orders.conftest import SYMBOL, market  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 1, tzinfo=UTC)
offsets = st.integers(min_value=0, max_value=50_000)  # ms after T0; repeats are likely
windows = st.tuples(st.none() | offsets, st.none() | offsets)
as_text = st.sampled_from([time_text, time_ms])  # RFC 3339 or integer milliseconds


def walk(client: APIClient, url: str, query: dict[str, Any], during=None) -> list[dict]:
    rows, page = [], client.get(url, query)
    while True:
        assert page.status_code == 200, page.content
        rows += page.json()["results"]
        if during is not None:
            during()
            during = None
        if page.json()["next"] is None:
            return rows
        page = client.get(page.json()["next"])


def query_of(since, until, limit, form) -> dict[str, Any]:
    query: dict[str, Any] = {"limit": limit}
    if since is not None:
        query["since"] = form(T0 + timedelta(milliseconds=since))
    if until is not None:
        query["until"] = form(T0 + timedelta(milliseconds=until))
    return query


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    times=st.lists(offsets, max_size=25),
    window=windows,
    limit=st.integers(min_value=1, max_value=7),
    form=as_text,
)
def test_walking_a_list_yields_the_window_exactly_once(make_user, times, window, limit, form):
    since, until = window
    if since is not None and until is not None and until <= since:
        until = since + 1
    user = make_user()
    events = AuditEvent.objects.bulk_create(
        AuditEvent(user=user, action=AuditAction.KEY_CREATED, created_at=T0 + timedelta(milliseconds=t))
        for t in times
    )  # fmt: skip
    client = APIClient()
    client.force_authenticate(user)
    arrived = []

    def another_arrives() -> None:  # a new event while the client walks (now: after T0)
        arrived.append(AuditEvent.objects.create(user=user, action=AuditAction.KEY_REVOKED).id)

    seen = [
        row["id"]
        for row in walk(
            client, "/api/v1/audit-log", query_of(since, until, limit, form), another_arrives
        )
    ]

    def inside(event: AuditEvent) -> bool:
        moment = time_ms(event.created_at) - time_ms(T0)
        return (since is None or moment >= since) and (until is None or moment < until)

    expected = sorted((e.id for e in events if inside(e)), reverse=since is None)
    assert len(seen) == len(set(seen)), "a row repeated"
    if since is None:  # newest first: what arrives meanwhile is newer than the walk's position
        assert seen == expected
    else:  # oldest first: the newcomer joins the end (when the window is still open)
        late = [i for i in arrived if until is None]
        assert seen in (expected, expected + late)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    starts=st.sets(st.integers(min_value=0, max_value=200), max_size=20),
    window=windows,
    limit=st.integers(min_value=1, max_value=6),
    form=as_text,
)
def test_candles_page_by_the_start_of_their_period(market, starts, window, limit, form):  # noqa: F811
    since, until = window
    if since is not None and until is not None and until <= since:
        until = since + 1
    Candle.objects.filter(market=market).delete()
    base = time_ms(T0) // 1000
    Candle.objects.bulk_create(
        Candle(market=market, interval="1m", start=base + 60 * s, open_ticks=800, high_ticks=800,
               low_ticks=800, close_ticks=800, volume_lots=1, quote_volume=8, trade_count=1)
        for s in starts
    )  # fmt: skip
    query = {
        **query_of(since and since * 240, until and until * 240, limit, form),
        "interval": "1m",
    }
    seen = [row["time"] for row in walk(APIClient(), f"/api/v1/markets/{SYMBOL}/candles", query)]
    low = (since or 0) * 240 if since is not None else None
    high = until * 240 if until is not None else None

    def inside(start: int) -> bool:
        moment = 60_000 * start
        return (low is None or moment >= low) and (high is None or moment < high)

    expected = sorted((s for s in starts if inside(s)), reverse=since is None)
    assert seen == [time_text(T0 + timedelta(minutes=s)) for s in expected]
